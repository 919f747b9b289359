"""The labeller benchmarks list test-side errors only once the rules are final (--final)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("negex.py", ["--show-errors", "even"], "listed only with --final"),
        ("negex.py", ["--show-errors", "radiology-even"], "listed only with --final"),
        ("labeller.py", ["--errors", "nodule_mass", "--split", "test"], "only with --final"),
    ],
)
def test_test_side_errors_need_final(script: str, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "id " not in result.stdout and "uid " not in result.stdout  # no sentence listed
