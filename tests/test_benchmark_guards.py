"""The labeller benchmarks list test-side errors only once the rules are final (--final),
and their bootstrap intervals bracket the score they qualify."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def _labeller_benchmark() -> ModuleType:
    """benchmarks/ is not a package: load the script as a module."""

    spec = importlib.util.spec_from_file_location(
        "labeller_bench", REPO / "benchmarks" / "labeller.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["labeller_bench"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_bootstrap_intervals_hold_the_point_estimate() -> None:
    bench = _labeller_benchmark()
    rows = [bench.Row(str(i), "", {"nodule_mass"} if i % 3 == 0 else set()) for i in range(90)]
    right = [{"nodule_mass": "present"} if i % 3 == 0 else {} for i in range(90)]
    assert bench.bootstrap_f1(rows, right, draws=200)["nodule_mass"] == (1.0, 1.0)
    # every sixth coded nodule missed: F1 0.909, and resampling must spread around it
    missed = [{} if i % 18 == 0 else p for i, p in enumerate(right)]
    point = bench.score(rows, missed)["nodule_mass"]["f1"]
    low, high = bench.bootstrap_f1(rows, missed, draws=400)["nodule_mass"]
    assert low < point < high and high - low > 0.05
