"""Headless Chromium for tests: render a local HTML file to a PNG and collect every
console message (a CSP violation, a failed load or a script error each logs one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)")


@dataclass(frozen=True)
class Rendered:
    screenshot: Path
    console: list[str]


def chromium() -> str:
    """The browser binary; outside CI a missing one skips, in CI (``CI`` set, as
    ``.ci/run`` does, which installs Debian's ``chromium``) it fails."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium not found: install Debian's package 'chromium'"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def render(page: Path, out_dir: Path, *, width: int = 1280, height: int = 2400) -> Rendered:
    shot = out_dir / (page.stem + ".png")
    proc = subprocess.run(
        [
            chromium(),
            *_FLAGS,
            f"--user-data-dir={out_dir / 'chromium-profile'}",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    console = [m.group(1) for m in map(_CONSOLE.search, proc.stderr.splitlines()) if m]
    return Rendered(shot, console)
