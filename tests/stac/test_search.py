"""STAC search against a real ``rustac serve`` on loopback, plus failure modes over real sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from rasterio.transform import from_bounds

from landslide_dask.errors import EmptySearchError, InputDataError, LandslideDaskError, StacUnreachableError, UsageError
from landslide_dask.stac.local import load_stac_dir
from landslide_dask.stac.search import search_items
from landslide_dask.stac.server import StacServer, serve_stac

from ..helpers import REPO

COL = "s2-test"
DEM = "dem-test"
REGION_A = (10.0, 45.0, 11.0, 46.0)  # Alps-ish
REGION_B = (-70.0, -30.0, -69.0, -29.0)  # Andes-ish
# id: (region, datetime, eo:cloud_cover or None)
ITEMS = {
    "a1": (REGION_A, "2024-05-01T10:00:00Z", 5.0),
    "a2": (REGION_A, "2024-05-20T10:00:00Z", 60.0),
    "a3": (REGION_A, "2024-06-15T10:00:00Z", 15.0),
    "b1": (REGION_B, "2024-05-03T14:00:00Z", 2.0),
    "b2": (REGION_B, "2024-07-01T14:00:00Z", 90.0),
    "b3": (REGION_B, "2024-05-25T14:00:00Z", None),
}


def _write_cog(path: Path, bounds: tuple[float, float, float, float], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full((1, 8, 8), value, dtype="uint16")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint16",
        crs="EPSG:4326",
        transform=from_bounds(*bounds, 8, 8),
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(data)


def _item(item_id: str, collection: str, bounds, dt: str, cc: float | None, href: str) -> dict:
    w, s, e, n = bounds
    props = {"datetime": dt, "proj:epsg": 4326, "proj:code": "EPSG:4326"}
    if cc is not None:
        props["eo:cloud_cover"] = cc
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n],
        "properties": props,
        "assets": {"red": {"href": href, "type": "image/tiff; application=geotiff", "roles": ["data"]}},
        "links": [],
    }


def _collection(cid: str) -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": cid,
        "description": cid,
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2024-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


def build_stac_folder(root: Path) -> Path:
    """A two-collection STAC folder with tiny COG assets referenced by relative hrefs."""
    (root / "stac" / "collections").mkdir(parents=True)
    (root / "stac" / "items").mkdir(parents=True)
    feats = []
    for k, (item_id, (bounds, dt, cc)) in enumerate(ITEMS.items()):
        _write_cog(root / "assets" / item_id / "red.tif", bounds, 100 + k)
        feats.append(_item(item_id, COL, bounds, dt, cc, f"../../assets/{item_id}/red.tif"))
    _write_cog(root / "assets" / "dem1" / "dem.tif", REGION_A, 7)
    dem = [_item("dem1", DEM, REGION_A, "2021-01-01T00:00:00Z", None, str(root / "assets" / "dem1" / "dem.tif"))]
    for cid, fs in ((COL, feats), (DEM, dem)):
        (root / "stac" / "collections" / f"{cid}.json").write_text(json.dumps(_collection(cid)))
        (root / "stac" / "items" / f"{cid}.json").write_text(json.dumps({"type": "FeatureCollection", "features": fs}))
    return root


@pytest.fixture(scope="module")
def stac_dir(tmp_path_factory) -> Path:
    return build_stac_folder(tmp_path_factory.mktemp("stacdir"))


@pytest.fixture(scope="module")
def server(stac_dir):
    with serve_stac(stac_dir) as url:
        yield url


def ids(items) -> set[str]:
    return {it["id"] for it in items}


WORLD = (-179.0, -89.0, 179.0, 89.0)


def _inside(region, pad=0.2):
    w, s, e, n = region
    return (w - pad, s - pad, e + pad, n + pad)


# ---------------------------------------------------------------------------------------------
# Filters against the real server
# ---------------------------------------------------------------------------------------------


def test_bbox_selects_region(server):
    assert ids(search_items(server, [COL], _inside(REGION_A))) == {"a1", "a2", "a3"}
    assert ids(search_items(server, [COL], _inside(REGION_B))) == {"b1", "b2", "b3"}
    # a bbox that only clips a corner of region A still intersects it
    assert ids(search_items(server, [COL], (10.9, 45.9, 12.0, 47.0))) == {"a1", "a2", "a3"}
    assert ids(search_items(server, [COL, DEM], _inside(REGION_A))) == {"a1", "a2", "a3", "dem1"}


def test_datetime_filter(server):
    got = search_items(server, [COL], _inside(REGION_A), datetime=("2024-05-10", "2024-06-30"))
    assert ids(got) == {"a2", "a3"}
    # dates are whole days inclusive; date and datetime objects work too
    assert ids(search_items(server, [COL], WORLD, datetime=(date(2024, 5, 1), date(2024, 5, 3)))) == {"a1", "b1"}
    got = search_items(server, [COL], WORLD, datetime=(datetime(2024, 5, 1, 12), None))
    assert ids(got) == {"a2", "a3", "b1", "b2", "b3"}


def test_cloud_filter_client_side_on_rustac(server):
    # rustac serve conforms to neither query nor filter (a query body returns nothing there),
    # so the filter must run client-side and still be exact.
    assert ids(search_items(server, [COL], WORLD, max_cloud=20)) == {"a1", "a3", "b1"}
    assert ids(search_items(server, [COL], WORLD, max_cloud=60)) == {"a1", "a3", "b1"}  # strict <
    # items without eo:cloud_cover are kept when there is no cloud filter
    assert "b3" in ids(search_items(server, [COL], WORLD))
    got = search_items(server, [COL], _inside(REGION_B), datetime=("2024-05-01", "2024-05-31"), max_cloud=50)
    assert ids(got) == {"b1"}


def test_max_items_and_plain_dicts(server):
    got = search_items(server, [COL], WORLD, max_cloud=50, max_items=2)
    assert len(got) == 2 and ids(got) <= {"a1", "a3", "b1"}
    item = search_items(server, [COL], _inside(REGION_A), datetime=("2024-05-01", "2024-05-01"))[0]
    assert isinstance(item, dict) and item["properties"]["proj:epsg"] == 4326  # kept in dicts
    href = item["assets"]["red"]["href"]
    assert os.path.isabs(href), "relative hrefs must be served absolute"
    with rasterio.open(href) as src:
        assert int(src.read(1)[0, 0]) == 100  # a1 was written with value 100


def test_empty_search_message(server):
    with pytest.raises(EmptySearchError) as ei:
        search_items(server, [COL], (150.0, -10.0, 151.0, -9.0), datetime=("2024-05-01", "2024-05-31"), max_cloud=20)
    msg = str(ei.value)
    for part in (COL, "150.0", "-9.0", "2024-05-01", "2024-05-31", "20", "widen"):
        assert part in msg, (part, msg)

    with pytest.raises(EmptySearchError) as ei:
        search_items(server, [COL], _inside(REGION_A), max_cloud=1)
    assert "cloudier" in str(ei.value) and "least cloudy: 5" in str(ei.value)

    with pytest.raises(EmptySearchError) as ei:
        search_items(server, ["sentinel-2-l2a"], _inside(REGION_A))
    msg = str(ei.value)
    assert "no collection 'sentinel-2-l2a'" in msg and COL in msg and DEM in msg


def test_bad_arguments(server):
    with pytest.raises(UsageError, match="lon/lat"):
        search_items(server, [COL], (500000, 5000000, 510000, 5010000))
    with pytest.raises(UsageError):
        search_items(server, [COL], (1, 2, 3))
    with pytest.raises(UsageError, match="percentage"):
        search_items(server, [COL], WORLD, max_cloud=150)


# ---------------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------------


def test_sign_callable_is_applied_to_every_item(server):
    seen = []

    def mark(item: dict) -> None:
        seen.append(item["id"])
        for a in item["assets"].values():
            a["href"] += "?token=abc"

    got = search_items(server, [COL], WORLD, sign=mark)
    assert ids(got) == set(ITEMS) and sorted(seen) == sorted(ITEMS)
    assert all(a["href"].endswith("?token=abc") for it in got for a in it["assets"].values())


def test_sign_planetary_computer_uses_sign_inplace(server, monkeypatch):
    pc = pytest.importorskip("planetary_computer", reason="planetary-computer (extra [pc]) not installed")
    calls = []
    original = pc.sign_inplace

    def spy(obj):
        calls.append(obj)
        return original(obj)  # local hrefs are left unchanged: no network

    monkeypatch.setattr(pc, "sign_inplace", spy)
    got = search_items(server, [COL], _inside(REGION_A), sign="planetary-computer")
    assert ids(got) == {"a1", "a2", "a3"}
    assert calls and all(isinstance(c, dict) for c in calls)


def test_sign_planetary_computer_missing_package(server, monkeypatch):
    monkeypatch.setitem(sys.modules, "planetary_computer", None)  # import now fails
    with pytest.raises(LandslideDaskError, match=r"landslide-dask\[pc\]"):
        search_items(server, [COL], WORLD, sign="planetary-computer")
    with pytest.raises(LandslideDaskError, match="unknown signing"):
        search_items(server, [COL], WORLD, sign="aws")


# ---------------------------------------------------------------------------------------------
# Server lifecycle and loading
# ---------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_is_gone_after_exit(stac_dir):
    srv = StacServer(stac_dir)
    with srv:
        pid, url, workdir = srv.process.pid, srv.url, srv.workdir
        assert requests.get(f"{url}/collections", timeout=5).ok
        assert _pid_alive(pid)
    assert srv.process.poll() is not None and not _pid_alive(pid)
    assert not workdir.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/collections", timeout=2)

    # also on an exception inside the block
    with pytest.raises(RuntimeError):
        with serve_stac(stac_dir) as url2:
            assert requests.get(f"{url2}/collections", timeout=5).ok
            raise RuntimeError("boom")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url2}/collections", timeout=2)


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        try:  # a zombie child of a dead parent still "exists" until reaped by init
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


def _python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_run_stac_server_stops_on_ctrl_c(stac_dir):
    proc = _python(f"from landslide_dask.stac.server import run_stac_server; run_stac_server({str(stac_dir)!r})")
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert requests.get(f"{url}/collections", timeout=5).ok
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping" in out
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/collections", timeout=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_server_dies_with_a_killed_parent(stac_dir):
    code = (
        "import time; from landslide_dask.stac.server import StacServer\n"
        f"s = StacServer({str(stac_dir)!r}); s.start(); print(s.process.pid, s.url, s.workdir, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = _python(code)
    workdir = None
    try:
        pid_s, url, workdir = proc.stdout.readline().split()
        assert requests.get(f"{url}/collections", timeout=5).ok
        proc.kill()  # SIGKILL: no finally, no atexit
        proc.wait(timeout=10)
        assert _wait_gone(int(pid_s)), "rustac outlived its killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        if workdir:  # a SIGKILLed parent cannot remove its temp dir
            shutil.rmtree(workdir, ignore_errors=True)


def test_port_in_use_is_reported(stac_dir, server):
    port = int(server.rsplit(":", 1)[1])
    with pytest.raises(LandslideDaskError, match="in use"):
        with serve_stac(stac_dir, port=port):
            pass


def test_load_stac_dir_and_errors(stac_dir, tmp_path):
    cols, items = load_stac_dir(stac_dir / "stac")  # DIR/stac works as well as DIR
    assert {c["id"] for c in cols} == {COL, DEM} and len(items) == 7
    assert all(os.path.isabs(a["href"]) for it in items for a in it["assets"].values())

    with pytest.raises(InputDataError, match="does not exist"):
        load_stac_dir(tmp_path / "nope")

    bad = build_stac_folder(tmp_path / "bad")
    (bad / "stac" / "items" / f"{COL}.json").write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(InputDataError, match=rf"{COL}\.json is not valid JSON"):
        load_stac_dir(bad)

    orphan = build_stac_folder(tmp_path / "orphan")
    (orphan / "stac" / "collections" / f"{DEM}.json").unlink()
    with pytest.raises(InputDataError, match=rf"{DEM}\.json.*dem1.*{DEM}"):
        load_stac_dir(orphan)


# ---------------------------------------------------------------------------------------------
# Unreachable servers and transient failures (real sockets on 127.0.0.1)
# ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_closed_port_is_unreachable_quickly():
    url = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(StacUnreachableError) as ei:
        search_items(url, [COL], WORLD, timeout=1, retries=2)
    assert time.monotonic() - t0 < 20
    assert url in str(ei.value) and "Check the URL" in str(ei.value)


def test_silent_server_times_out_within_bound():
    # accepts TCP connections (kernel backlog) but never answers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(StacUnreachableError, match="time-out"):
            search_items(url, [COL], WORLD, timeout=1, retries=2)
        elapsed = time.monotonic() - t0
    assert 2.5 < elapsed < 20, elapsed  # really waited for 3 attempts, but bounded


class FlakyProxy:
    """HTTP proxy in front of the real server that misbehaves on purpose.

    ``plan`` maps an HTTP method to the faults its next requests get, one per request ("reset":
    close the socket without an answer; an int: answer with that HTTP status); other requests are
    forwarded upstream, with the upstream base URL rewritten so pystac-client keeps talking to
    the proxy.
    """

    def __init__(self, upstream: str, plan: dict[str, list] | None = None, advertise_query: bool = False) -> None:
        self.upstream = upstream
        self.plan = {k: list(v) for k, v in (plan or {}).items()}
        self.advertise_query = advertise_query
        self.log: list[tuple[str, str, str]] = []  # (method, path, outcome)
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    faults = proxy.plan.get(method) or []
                    fault = faults.pop(0) if faults else None
                    proxy.log.append((method, self.path, str(fault or "ok")))
                if fault == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(fault, int):
                    msg = b"temporarily unavailable"
                    self.send_response(fault)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                if body:
                    payload = json.loads(body)
                    with proxy.lock:
                        proxy.bodies.append(json.loads(body))
                    payload.pop("query", None)  # rustac would answer [] to it
                    body = json.dumps(payload).encode()
                r = requests.request(
                    method,
                    proxy.upstream + self.path,
                    data=body or None,
                    headers={"Content-Type": "application/json"} if body else {},
                    timeout=10,
                )
                text = r.text.replace(proxy.upstream, proxy.url)
                if self.path == "/" and proxy.advertise_query:
                    root = json.loads(text)
                    root["conformsTo"].append("https://api.stacspec.org/v1.0.0/item-search#query")
                    text = json.dumps(root)
                out = text.encode()
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_transient_failures_are_retried(server):
    expected = search_items(server, [COL], _inside(REGION_A))
    # root GET: connection reset, then 503; first POST search: 502; then all fine
    with FlakyProxy(server, {"GET": ["reset", 503], "POST": [502]}) as proxy:
        t0 = time.monotonic()
        got = search_items(proxy.url, [COL], _inside(REGION_A), timeout=5, retries=3, backoff_factor=0.1)
        elapsed = time.monotonic() - t0
    assert ids(got) == ids(expected) == {"a1", "a2", "a3"}
    assert [o for _, _, o in proxy.log][:3] == ["reset", "503", "ok"], proxy.log
    posts = [o for m, _, o in proxy.log if m == "POST"]
    assert posts == ["502", "ok"], proxy.log  # the failed search was retried once
    assert len(proxy.log) < 12 and elapsed < 15


def test_persistent_503_gives_up(server):
    with FlakyProxy(server, {"GET": [503] * 50}) as proxy:
        t0 = time.monotonic()
        with pytest.raises(StacUnreachableError, match="503"):
            search_items(proxy.url, [COL], WORLD, timeout=2, retries=2, backoff_factor=0.1)
        assert time.monotonic() - t0 < 20
    assert len(proxy.log) == 3  # 1 try + 2 retries, then stop


def test_query_extension_used_when_advertised(server):
    # Earth Search / Planetary Computer advertise `query`: the cloud filter must go to the server.
    with FlakyProxy(server, advertise_query=True) as proxy:
        got = search_items(proxy.url, [COL], _inside(REGION_A), max_cloud=20)
    assert proxy.bodies and proxy.bodies[0]["query"] == {"eo:cloud_cover": {"lt": 20.0}}
    # our proxy strips the query before rustac, so all three come back: proof no client filter ran
    assert ids(got) == {"a1", "a2", "a3"}
