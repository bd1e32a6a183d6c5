"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``):
no websocket client and no driver package, only the browser from Debian's ``chromium`` package.

:func:`open_page` loads a page with the network shut (every host resolves to nothing), waits for
a JavaScript condition, and returns what a test checks: console errors, uncaught exceptions,
failed loads, every URL requested, values of expressions, and a PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["chromium", "open_page", "PageResult"]


def chromium() -> str | None:
    """The Chromium executable, or None where it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    requested: list[str] = field(default_factory=list)  # every URL the page asked for
    values: dict = field(default_factory=dict)  # expression -> value at the end
    screenshot: bytes = b""


class _Pipe:
    """The DevTools protocol over Chromium's pipe: JSON messages separated by NUL bytes."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc, self.w, self.r = proc, write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read_one(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        mid = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_one(deadline))
        except TimeoutError:
            pass


def open_page(
    url: str,
    *,
    ready: str = "true",
    values: tuple[str, ...] = (),
    timeout: float = 30,
    size: tuple[int, int] = (1100, 800),
    settle: float = 1.0,
) -> PageResult:
    """Load ``url`` offline, wait until the JS expression ``ready`` is true, then settle and collect."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    args = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--allow-file-access-from-files",
        f"--user-data-dir={profile}",
        "--remote-debugging-pipe",
        f"--window-size={size[0]},{size[1]}",
        "about:blank",
    ]

    def child_fds() -> None:  # the protocol wants the browser's fd 3 (reads) and 4 (writes)
        r, w = os.dup(to_child_r), os.dup(from_child_w)  # above 4, so neither dup2 clobbers the other
        os.dup2(r, 3)
        os.dup2(w, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    proc = subprocess.Popen(
        args, close_fds=False, preexec_fn=child_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    os.close(to_child_r)
    os.close(from_child_w)
    pipe = _Pipe(proc, to_child_w, from_child_r)
    res = PageResult()
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + timeout
        while True:
            got = pipe.call(
                "Runtime.evaluate", {"expression": f"Boolean({ready})", "returnByValue": True}, session=session
            )
            if got.get("result", {}).get("value") is True:
                break
            if time.monotonic() > deadline:
                res.errors.append(f"timed out waiting for {ready}")
                break
            pipe.pump(0.2)
        pipe.pump(settle)
        for expr in values:
            got = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
            res.values[expr] = got.get("result", {}).get("value")
        shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session=session)
        res.screenshot = base64.b64decode(shot["data"])
    finally:
        for ev in pipe.events:
            method, p = ev.get("method", ""), ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                res.errors.append(
                    "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
                )
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                res.errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                res.errors.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
            elif method == "Network.loadingFailed":
                res.errors.append("load failed: " + p.get("errorText", ""))
            elif method == "Network.requestWillBeSent":
                res.requested.append(p.get("request", {}).get("url", ""))
        try:
            pipe.send("Browser.close")
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
            proc.wait()
        os.close(to_child_w)
        os.close(from_child_r)
        shutil.rmtree(profile, ignore_errors=True)
    return res


def save_screenshot(res: PageResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(res.screenshot)
    return path


if __name__ == "__main__":  # a screenshot of a page, as the README's: python -m tests.helpers.browser PAGE OUT.png
    import sys

    page, png = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    result = open_page(page.as_uri(), ready="document.body.dataset.ready === '1'", settle=2.0)
    save_screenshot(result, png)
    print(f"{png}: {len(result.screenshot)} bytes; page errors: {result.errors or 'none'}")
