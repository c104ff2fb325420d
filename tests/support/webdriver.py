"""A minimal W3C WebDriver client over httpx for Debian's chromedriver + headless Chromium (no Selenium)."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from sandbox.patience import Patience

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1600",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecc"


class Browser:
    def __init__(self, http: httpx.Client, session: str, driver_pid: int) -> None:
        self.http, self.session, self.driver_pid = http, session, driver_pid

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, f"/session/{self.session}{path}", json=body)
        response.raise_for_status()
        return response.json()["value"]

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, xpath: str) -> str:
        """The first element at ``xpath``, waiting as long as the browser works on the page (CPU use of
        chromedriver and its chromium), within the overall limit of sandbox/patience.py."""
        patience = Patience(lambda: [self.driver_pid], [], stall_seconds=60)
        while True:
            found = self._call("POST", "/elements", {"using": "xpath", "value": xpath})
            if found:
                return str(found[0].get(ELEMENT) or next(iter(found[0].values())))
            if (reason := patience.check()) is not None:
                raise AssertionError(f"no element {xpath}: the page was {reason}")
            time.sleep(0.3)

    def click(self, element: str) -> None:
        self._call("POST", f"/element/{element}/click", {})

    def source(self) -> str:
        return str(self._call("GET", "/source"))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))


@contextmanager
def browser() -> Iterator[Browser]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise RuntimeError(
            "the UI test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp(prefix="promote-chromium-")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            patience = Patience(lambda: [proc.pid], [])
            while True:
                try:
                    if http.get("/status").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if (reason := patience.check()) is not None:
                    raise RuntimeError(f"chromedriver {reason}")
                time.sleep(0.1)
            caps = {
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {
                            "binary": chromium,
                            "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"],
                        },
                    }
                }
            }
            session = http.post("/session", json=caps)
            session.raise_for_status()
            session_id = session.json()["value"]["sessionId"]
            try:
                yield Browser(http, session_id, proc.pid)
            finally:
                http.delete(f"/session/{session_id}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
