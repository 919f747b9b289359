"""benchmarks/ingest.py for one named model: a CPU smoke run end to end with a tiny model,
and ``--device cuda`` without a GPU as one line (the GPU number is taken where there is
one: ``--device cuda --model metaclip-pe-core-bigg-448 --random-weights``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, drop_database

SCRIPT = str(REPO / "benchmarks" / "ingest.py")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line() -> None:
    result = run("--device", "cuda", "--model", "metaclip-pe-core-bigg-448", "--random-weights")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert (
        lines[0].startswith("ingest.py: error: --device cuda: torch") and "no CUDA GPU" in lines[0]
    )


def test_one_tiny_model_on_cpu_runs_every_stage(server_url: str, shared_data, db_url) -> None:
    try:
        result = run(
            "--device", "cpu", "--model", "tiny-random", "--precision", "bf16",
            "-n", "24", "--batch-size", "8", "--workers", "1",
            env={"DATABASE_URL": db_url},
        )  # fmt: skip
    finally:
        drop_database(server_url, "bench_ingest")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "CPU, bf16 (least cosine with fp32 on the probe batch: " in out, out
    rates = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r"^(model only|decode \+ embed stream|casebase ingest)\s+([\d.]+)", out, re.M
        )
    }
    assert set(rates) == {"model only", "decode + embed stream", "casebase ingest"}, out
    assert all(rate > 0 for rate in rates.values()) and "n/a (CPU)" in out
