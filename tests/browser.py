"""Drive headless Chromium over the DevTools protocol: load a page, collect console errors and
uncaught exceptions, evaluate an expression, take a screenshot. Used by the report tests."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)
    """Console errors, failed log entries and uncaught exceptions, as text."""
    value: Any = None
    """The value of the evaluated expression."""
    screenshot: bytes = b""


def inspect_page(url: str, expression: str, screenshot: Path | None = None, width: int = 1280,
                 height: int = 2000, timeout: float = 60.0) -> PageResult:
    """Open `url` in a fresh headless Chromium, wait for `load`, evaluate `expression` (its value must be
    JSON-serialisable) and optionally save a full-page screenshot."""
    from websockets.sync.client import connect

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen([find_chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = _devtools_port(proc, timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout) as ws:
            return _drive(_Session(ws, timeout), url, expression, screenshot, width, height)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if m := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
            return int(m.group(1))
    raise RuntimeError("chromium did not start its DevTools server; stderr:\n" + "".join(seen[-20:]))


class _Session:
    def __init__(self, ws: Any, timeout: float):
        self.ws, self.timeout, self.next_id, self.events = ws, timeout, 0, []

    def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=self.timeout))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv(timeout=self.timeout))
            self.events.append(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(f"no {method} within {self.timeout}s")


def _drive(s: _Session, url: str, expression: str, screenshot: Path | None, width: int, height: int) -> PageResult:
    for domain in ("Runtime", "Log", "Page"):
        s.call(f"{domain}.enable")
    s.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    s.call("Page.navigate", url=url)
    s.wait_for("Page.loadEventFired")
    value = s.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    out = PageResult(value=value.get("result", {}).get("value"))
    if screenshot is not None:
        shot = s.call("Page.captureScreenshot", format="png")
        out.screenshot = base64.b64decode(shot["data"])
        screenshot.write_bytes(out.screenshot)
    s.call("Runtime.evaluate", expression="1")  # flush events queued during the screenshot
    out.errors = _errors(s.events)
    return out


def _errors(events: list[dict]) -> list[str]:
    errors = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append("uncaught: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                  for a in p.get("args", [])))
        elif e.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
            errors.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')}")
    return errors
