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


def test_the_iu_coders_convention_is_derived_from_the_packaged_cues() -> None:
    """``labeller.py --convention iu-coders`` scores as the IU coders code: both findings
    of a differential and a borderline finding present; the packaged cues keep them
    uncertain, and every other cue (negation here) is the packaged one."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import labeller
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from casebase.synthesis.extract import extract_many, rollup

    texts = [
        "Left basilar opacity, atelectasis or scarring.",
        "Opacity at the right base, atelectasis versus pneumonia.",
        "Borderline cardiomegaly.",
        "No pneumothorax.",
    ]
    strict = [rollup(m) for m in extract_many(texts)]
    coders = [rollup(m) for m in extract_many(texts, cues=labeller.iu_coders_cues())]
    assert strict[0]["atelectasis"] == "uncertain" and coders[0]["atelectasis"] == "present"
    assert coders[0]["scarring_fibrosis"] == "present"
    assert strict[1]["atelectasis"] == "uncertain" and coders[1]["atelectasis"] == "present"
    assert strict[2]["cardiomegaly"] == "uncertain" and coders[2]["cardiomegaly"] == "present"
    assert strict[3]["pneumothorax"] == coders[3]["pneumothorax"] == "absent"
