"""Headless Chromium driven over the DevTools protocol (websockets): load a page, wait until a script
says it is done, read the DOM, take a screenshot. For the playground's test, and its picture in docs/:

    .venv/bin/python tests/browser.py URL OUT.png    # a running server's page, e.g. http://127.0.0.1:8000/?q=...
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    def __init__(self, width: int = 1280, height: int = 900) -> None:
        from websockets.sync.client import connect

        exe = chromium()
        if exe is None:
            raise RuntimeError("no Chromium on this machine")
        self.dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={self.dir.name}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.dir.name) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline:
                self.close()
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        import urllib.request

        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=64 << 20))
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, done: str = "document.body.dataset.done === '1'", timeout: float = 60.0) -> None:
        """Load `url` and wait until the expression `done` is true."""
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while not self.evaluate(done):
            if time.time() > deadline:
                raise TimeoutError(f"the page did not finish: {self.evaluate('document.body.innerText')[:500]}")
            time.sleep(0.1)

    def screenshot(self, path: str | Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if getattr(self, "_stack", None) is not None:
            self._stack.close()
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    with Browser() as b:
        b.open(sys.argv[1], timeout=600)
        b.screenshot(sys.argv[2])
        print("wrote", sys.argv[2])
