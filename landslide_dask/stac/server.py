"""A real STAC API on loopback, served by ``rustac serve`` from a "STAC folder".

Why a real server: the demo and the tests then exercise exactly the code path a user takes against
Earth Search or the Planetary Computer (pystac-client ``search`` over HTTP), not a file shortcut.

The STAC folder layout (a contract shared with ``synth`` and ``catalog``)::

    DIR/stac/collections/<collection-id>.json   # a STAC Collection
    DIR/stac/items/<collection-id>.json         # a FeatureCollection of that collection's Items

Asset hrefs in an items file are absolute paths/URLs or paths relative to that items file.

Facts about ``rustac serve`` 0.9.x (in-memory backend), checked on this project's machines:

- collections and items files may be given in any order; an item whose collection was not
  loaded gets an auto-generated collection, so we check collection ids ourselves;
- its conformance has ``item-search`` but neither ``query`` nor ``filter``: a ``query`` or
  ``filter`` body is *not* rejected but silently returns no items (``search.py`` filters clouds
  client-side for such servers);
- ``GET /search?limit=N`` answers HTTP 500 ("unsupported value"); POST search (what pystac-client
  uses when the root advertises it) pages correctly with ``next`` links carrying a ``skip`` body;
- malformed JSON makes it exit at once with status 1 and the parse error on stderr;
- the console script is a Python wrapper around a Rust ``main()`` that reads the process argv.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from ..errors import LandslideDaskError, StacUnreachableError
from .local import load_stac_dir

log = logging.getLogger(__name__)

__all__ = [
    "StacServer",
    "run_stac_server",
    "serve_stac",
]

STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


# Running rustac serve


def _rustac_command(workdir: Path) -> list[str]:
    """The argv prefix that runs the rustac CLI.

    Prefer the console script of *this* interpreter's environment (a venv not on PATH), then PATH,
    then a launcher script (rustac's ``main()`` reads the process argv, so ``python -c`` fails).
    """
    exe_dir = Path(sys.executable).parent
    for name in ("rustac", "rustac.exe"):
        cand = exe_dir / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    found = shutil.which("rustac")
    if found:
        return [found]
    try:
        import rustac  # noqa: F401
    except ImportError as e:
        raise LandslideDaskError(
            "the `rustac` command (the loopback STAC API server) is not installed: "
            "run `pip install rustac` in this environment."
        ) from e
    launcher = workdir / "rustac_main.py"
    launcher.write_text("import sys, rustac\nsys.exit(rustac.main())\n")
    return [sys.executable, str(launcher)]


# Run before exec'ing rustac: the kernel sends it SIGTERM if the Python that started it dies, even
# by SIGKILL, so no orphaned server outlives us. (A launcher rather than Popen's preexec_fn,
# which is unsafe in threaded programs such as Dask clients.)
_PDEATHSIG_LAUNCHER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # our parent is already gone
os.execv(sys.argv[2], sys.argv[2:])
"""


def _with_parent_death_signal(cmd: list[str], workdir: Path) -> list[str]:
    if not sys.platform.startswith("linux"):
        return cmd
    launcher = workdir / "pdeathsig_exec.py"
    if not launcher.exists():
        launcher.write_text(_PDEATHSIG_LAUNCHER)
    return [sys.executable, str(launcher), str(os.getpid()), *cmd]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (else our readiness poll would see that server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


_LIVE: weakref.WeakSet[StacServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - safety net for abnormal exits
    for srv in list(_LIVE):
        srv.stop()


class StacServer:
    """One ``rustac serve`` subprocess serving a STAC folder; use :func:`serve_stac`.

    Kept as a class so a CLI can watch the process and tests can check it is really gone.
    """

    def __init__(self, stac_root: str | os.PathLike[str], port: int | None = None, host: str = "127.0.0.1") -> None:
        self.stac_root = Path(stac_root)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    def server_log(self) -> str:
        """What rustac printed (stdout and stderr); for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace").strip()

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Write the absolutised catalogue to a temp dir, launch rustac, wait until it answers."""
        collections, items = load_stac_dir(self.stac_root)
        self.workdir = Path(tempfile.mkdtemp(prefix="landslide-stac-"))
        try:
            col_paths, item_paths = self._write_catalogue(collections, items)
            expected = {c["id"]: 0 for c in collections}
            for it in items:
                expected[it["collection"]] += 1
            attempts = 3 if self.requested_port is None else 1
            for attempt in range(attempts):
                self.port = self.requested_port or _free_port(self.host)
                try:
                    if not _port_is_free(self.host, self.port):
                        raise _PortTaken()
                    self._launch(col_paths + item_paths)
                    self._wait_ready(expected, timeout)
                    log.info("STAC API serving %s at %s", self.stac_root, self.url)
                    return self.url
                except _PortTaken:
                    self._kill()
                    if attempt == attempts - 1:
                        raise LandslideDaskError(
                            f"cannot serve the STAC API on {self.host}:{self.port}: the port is in use"
                            + ("" if self.requested_port is None else "; choose another with --port")
                            + "."
                        ) from None
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self.stop()
            raise

    def _write_catalogue(self, collections: list[dict], items: list[dict]) -> tuple[list[str], list[str]]:
        assert self.workdir is not None
        (self.workdir / "collections").mkdir()
        (self.workdir / "items").mkdir()
        col_paths, item_paths = [], []
        by_col: dict[str, list[dict]] = {}
        for it in items:
            by_col.setdefault(it["collection"], []).append(it)
        for i, col in enumerate(collections):
            p = self.workdir / "collections" / f"{i}.json"  # index, not id: ids may hold any char
            p.write_text(json.dumps(col))
            col_paths.append(str(p))
            feats = by_col.get(col["id"], [])
            if feats:
                q = self.workdir / "items" / f"{i}.json"
                q.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
                item_paths.append(str(q))
        return col_paths, item_paths

    def _launch(self, hrefs: list[str]) -> None:
        assert self.workdir is not None
        base = _rustac_command(self.workdir)
        cmd = _with_parent_death_signal(base, self.workdir) + ["serve", "--addr", f"{self.host}:{self.port}", *hrefs]
        self._log_path = self.workdir / "rustac.log"
        logf = open(self._log_path, "wb")
        try:
            # Own session/process group: Ctrl-C in the terminal does not hit it before our
            # cleanup runs, and killpg also reaches anything it spawns.
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            raise LandslideDaskError(f"cannot start `{' '.join(base)}`: {e}") from e
        finally:
            logf.close()
        _LIVE.add(self)

    def _wait_ready(self, expected: dict[str, int], timeout: float) -> None:
        """Poll until every collection is listed and each non-empty one returns an item."""
        assert self.process is not None
        session = requests.Session()
        session.trust_env = False  # never send loopback polls through a proxy
        deadline = time.monotonic() + timeout
        pending_search = {cid for cid, n in expected.items() if n}
        last = "no answer yet"
        try:
            while True:
                rc = self.process.poll()
                if rc is not None:
                    out = self.server_log()
                    if "in use" in out.lower():
                        raise _PortTaken()
                    raise LandslideDaskError(
                        f"`rustac serve` exited with status {rc} while starting on {self.host}:{self.port} "
                        f"(catalogue {self.stac_root}). Its output:\n{out or '(nothing)'}"
                    )
                try:
                    r = session.get(f"{self.url}/collections", timeout=2)
                    if r.ok:
                        listed = {c.get("id") for c in r.json().get("collections", [])}
                        missing = set(expected) - listed
                        if missing:
                            last = f"collections not listed yet: {sorted(missing)}"
                        else:
                            for cid in sorted(pending_search):
                                s = session.post(
                                    f"{self.url}/search", json={"collections": [cid], "limit": 1}, timeout=2
                                )
                                if s.ok and s.json().get("features"):
                                    pending_search.discard(cid)
                            if not pending_search:
                                if self.process.poll() is None:
                                    return
                                continue  # it died meanwhile: report that above
                            last = f"no items searchable yet in {sorted(pending_search)}"
                    else:
                        last = f"HTTP {r.status_code} from /collections"
                except (requests.RequestException, ValueError) as e:
                    last = str(e)
                if time.monotonic() > deadline:
                    raise StacUnreachableError(
                        f"`rustac serve` did not become ready at {self.url} within {timeout:.0f} s "
                        f"({last}). Its output:\n{self.server_log() or '(nothing)'}"
                    )
                time.sleep(0.05)
        finally:
            session.close()

    def _kill(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.wait()
        # (No killpg once it has been reaped: its pid could then belong to someone else.)
        _LIVE.discard(self)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after a grace period) and remove temp files."""
        try:
            self._kill()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def __enter__(self) -> StacServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortTaken(Exception):
    pass


@contextmanager
def serve_stac(stac_root: str | os.PathLike[str], port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a STAC folder as a STAC API for the duration of the ``with`` block; yields its URL.

    The server is always stopped on exit, including on exceptions and KeyboardInterrupt.
    """
    server = StacServer(stac_root, port=port, host=host)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def run_stac_server(stac_root: str | os.PathLike[str], port: int | None = None, host: str = "127.0.0.1") -> None:
    """Blocking: serve until Ctrl-C (for ``landslide-dask serve-stac DIR --port N``)."""
    import threading

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # stop cleanly on SIGTERM too (scancel, docker stop, kill)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _term)
    server = StacServer(stac_root, port=port, host=host)
    try:
        server.start()
        print(f"STAC API for {Path(stac_root).resolve()} at {server.url}  (Ctrl-C to stop)", flush=True)
        while True:
            assert server.process is not None
            rc = server.process.poll()
            if rc is not None:
                raise LandslideDaskError(
                    f"`rustac serve` stopped unexpectedly (status {rc}). Its output:\n{server.server_log()}"
                )
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping the STAC API", flush=True)
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
