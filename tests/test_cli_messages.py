"""Messages that say what to do: bad arguments exit 2 and name what to pass instead, a failed pixel
read says whether the network, an expired signature or the file is at fault (real failures: a
closed loopback port, a loopback server answering 403/404/503, a truncated GeoTIFF), and every
``--option`` a message of the package advises exists in the command line."""

from __future__ import annotations

import argparse
import ast
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from landslide_dask.cli import build_parser
from landslide_dask.cli import main as cli_main
from landslide_dask.cube.grid import Grid
from landslide_dask.cube.load import Asset, Stack, close_files
from landslide_dask.cube.read_errors import explain_read_failure
from landslide_dask.errors import InputDataError

PACKAGE = Path(__file__).resolve().parents[1] / "landslide_dask"


# --- bad arguments: exit 2, what to pass instead -----------------------------------------------


def _cube(tmp_path: Path, aoi: str) -> list[str]:
    return [
        "cube",
        "--stac",
        str(tmp_path),
        "--event-date",
        "2018-09-06",
        "--aoi",
        aoi,
        "--no-dem",
        "--out",
        str(tmp_path / "c.zarr"),
    ]


def test_an_aoi_with_three_numbers_exits_2_and_says_four(tmp_path, capsys):
    assert cli_main(_cube(tmp_path, "1,2,3")) == 2
    err = capsys.readouterr().err
    assert "usage: landslide-dask cube" in err and "W,S,E,N needs four numbers" in err and "got 3" in err


def test_an_aoi_given_latitude_first_is_recognised(tmp_path, capsys):
    assert cli_main(_cube(tmp_path, "42.7,141.9,42.9,142.1")) == 2
    err = capsys.readouterr().err
    assert "latitude first" in err and "--aoi 141.9,42.7,142.1,42.9" in err


def test_a_missing_aoi_file_says_what_to_pass(tmp_path, capsys):
    assert cli_main(_cube(tmp_path, str(tmp_path / "area.gpkg"))) == 2
    err = capsys.readouterr().err
    assert "area.gpkg does not exist" in err and "GeoJSON" in err and "W,S,E,N" in err


def test_a_missing_model_says_what_to_pass(tmp_path, capsys):
    assert cli_main(["evaluate", "--model", str(tmp_path / "best.pt"), "--cube", str(tmp_path / "c.zarr")]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "train --out DIR" in err and "DIR/best.pt" in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"")
    assert cli_main(["model-info", "--model", str(tmp_path / "run")]) == 2
    assert f"--model {tmp_path / 'run' / 'best.pt'}" in capsys.readouterr().err


# --- a failed pixel read: which failure, and what to do ------------------------------------------


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request with the status in its path, e.g. /403/x.tif, and an Azure-like body."""

    def do_GET(self) -> None:
        code = int(self.path.split("?")[0].split("/")[1])
        body = (
            b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server '
            b"failed to authenticate the request.</Message></Error>"
        )
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def refusing_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


GRID = Grid(epsg=32633, res=10.0, x0=500_000.0, y0=5_000_000.0, width=16, height=16)


def _read(href: str) -> str:
    """The loader's error for one asset at ``href`` (a real read through ``Stack``)."""
    stack = Stack(GRID, (((Asset(href, "S2X_TEST", "red", None),),),), "uint16", 0)
    try:
        with pytest.raises(InputDataError) as err, rasterio.Env(GDAL_HTTP_MAX_RETRY=0, GDAL_HTTP_TIMEOUT=5):
            stack.read(slice(0, 16), slice(0, 16))
    finally:
        close_files()
    return str(err.value)


def test_a_closed_port_is_a_network_error_not_a_corrupt_file():
    msg = _read(f"http://127.0.0.1:{_closed_port()}/B04.tif")
    assert "network error" in msg and "run the command again" in msg and "corrupt" not in msg


def test_an_expired_signature_says_so_and_to_run_again(refusing_server):
    href = (
        f"{refusing_server}/403/B04.tif?st=2026-01-01T00%3A00%3A00Z&se=2026-01-01T01%3A00%3A00Z&sp=rl"
        "&sv=2024-05-04&sr=c&sig=abc"
    )
    msg = _read(href)
    assert "HTTP 403" in msg and "expired" in msg and "--sign planetary-computer" in msg and "corrupt" not in msg
    assert "sig=abc" not in msg  # no signature in messages
    unsigned = _read(f"{refusing_server}/403/B04.tif")
    assert "refused" in unsigned and "expired" not in unsigned


def test_missing_and_failing_servers_are_told_apart(refusing_server):
    assert "HTTP 404" in _read(f"{refusing_server}/404/B04.tif") and "--exclude-item S2X_TEST" in _read(
        f"{refusing_server}/404/B04.tif"
    )
    msg = _read(f"{refusing_server}/503/B04.tif")
    assert "HTTP 503" in msg and "again later" in msg and "corrupt" not in msg


def test_a_truncated_geotiff_is_corrupt(tmp_path):
    path = tmp_path / "B04.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=16,
        height=16,
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(500_000, 5_000_000, 10, 10),
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    ) as dst:
        dst.write(np.random.default_rng(0).integers(1, 5000, (1, 16, 16)).astype("uint16"))
    path.write_bytes(path.read_bytes()[:-200])
    msg = _read(str(path))
    assert "truncated or corrupt" in msg and "--exclude-item S2X_TEST" in msg and "network" not in msg


def test_gdal_messages_are_classified():
    assert "network error" in explain_read_failure("CURL error: Could not resolve host: example.invalid")
    assert "network error" in explain_read_failure("CURL error: SSL certificate problem: certificate has expired")
    assert "expired" in explain_read_failure("HTTP response code: 403 - AuthenticationFailed: Signature not valid")
    assert "busy" in explain_read_failure("HTTP response code: 429")
    assert "corrupt" in explain_read_failure("TIFFReadEncodedTile() failed.")


# --- every option a message advises exists -------------------------------------------------------


def _parser_options() -> set[str]:
    opts: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            opts.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return opts


_MESSAGE_CALLS = {"warn", "warning", "error", "exception", "info", "print", "echo", "fail"}
_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


_MESSAGE_FUNCTIONS = re.compile(r"explain|message|advice|hint|unreachable")


def _message_strings(tree: ast.AST):
    """String pieces of what the package tells users: raised exceptions, warnings, logs, prints, and
    every string of the functions that compose messages (``explain_read_failure``, ``_empty_message``)."""
    for node in ast.walk(tree):
        roots = []
        if isinstance(node, ast.Raise) and node.exc is not None:
            roots.append(node.exc)
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _MESSAGE_CALLS:
                roots.extend(node.args)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _MESSAGE_FUNCTIONS.search(node.name):
            roots.append(node)
        for root in roots:
            for sub in ast.walk(root):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.lineno, sub.value


def test_every_option_named_in_a_message_exists_in_the_cli():
    options = _parser_options()
    unknown = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            for m in _OPTION.finditer(text):
                if f"--{m.group(1)}" not in options:
                    unknown.append(f"{path.relative_to(PACKAGE.parent)}:{line}: --{m.group(1)}")
    assert not unknown, "messages advise options the CLI does not have:\n" + "\n".join(unknown)
    assert {"--exclude-item", "--sign", "--aoi", "--model", "--stac"} <= options
