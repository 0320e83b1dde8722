"""Helpers of the end-to-end tests: the browser's settings, waiting, the demo's run."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.config import Settings

CHROMIUM = Path(os.environ.get("CHANGEFOLD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots of the pages, one per page (the folder is git-ignored).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not seen within {timeout_s:.0f} s (last: {last!r})")


@dataclass
class DemoRun:
    settings: Settings
    proc: subprocess.Popen[bytes]
    output: Path

    @property
    def url(self) -> str:
        return self.settings.stack.dashboard_url

    def text(self) -> str:
        return self.output.read_text(errors="replace")
