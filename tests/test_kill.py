"""``kill -9`` of a real ``casebase ingest``, ``reembed`` and ``train`` leaves nothing
behind (issue 12): every process of it (its process group and all its descendants,
found through /proc before the kill) is gone within 10 s.

Each command runs in a session of its own with decode workers on images slow to decode
(an 8000² JPEG, ~0.4 s each), so that it is mid-run when it is killed and each worker
still has many seconds of queued batches: a worker that did not die with its parent
would outlive the 10 s (torch's own watchdog looks at the parent only between tasks;
with ``die_with_parent`` taken out of casebase/embedding/workers.py these tests fail).
The stream-level mechanism is tests/test_workers.py's; these check the commands end to
end.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("open_clip")

from tests.conftest import REPO, drop_database, make_database

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

GONE_WITHIN_S = 10.0
N_BASE = 100  # studies loaded before the kills: what reembed and train work through


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process; None once gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
    return None if state in ("Z", "X") else (state, int(ppid), int(pgrp))


def _processes() -> dict[int, tuple[str, int, int]]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            out[int(entry.name)] = stat
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def family(pid: int) -> dict[int, str]:
    """Every live process of ``pid``'s group, and every descendant of ``pid``: {pid: comm}."""
    procs = _processes()
    found = {p for p, (_, _, group) in procs.items() if group == pid}
    frontier = {pid}
    while frontier:
        children = {p for p, (_, ppid, _) in procs.items() if ppid in frontier} - found
        found |= children
        frontier = children
    found.add(pid)
    return {p: _comm(p) for p in found if p in procs}


def kill_mid_run(args: list[str], url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "casebase.cli", *args],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so nothing of it can hide
    )
    alive: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180
        workers: dict[int, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            workers = {p: c for p, c in family(proc.pid).items() if c == "pt_data_worker"}
            if workers:
                break
            time.sleep(0.05)
        assert workers, f"no decode worker appeared: {proc.stderr.read().decode()[-3000:]}"
        time.sleep(1.0)  # the workers are busy with their queued batches
        before = family(proc.pid)
        assert proc.poll() is None, "it finished before it could be killed: make it longer"
        assert set(workers) <= set(before), (workers, before)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        end = time.monotonic() + GONE_WITHIN_S
        alive = dict(before)
        while time.monotonic() < end:
            alive = {p: c for p, c in alive.items() if _stat(p) is not None}
            alive |= {p: c for p, c in family(proc.pid).items() if p != proc.pid}
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, f"still alive {GONE_WITHIN_S:g} s after kill -9 of {args[0]}: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in alive:  # leave nothing behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _manifest(folder: Path, prefix: str, n: int, image: str) -> Path:
    path = folder / f"{prefix}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "image_path", "patient_id", "modality", "body_part", "label"])
        for i in range(n):
            w.writerow([f"{prefix}-{i:03d}", image, f"P-{i % 12}", "CR", "CHEST", "ab"[i % 2]])
    return path


def _slow_jpeg(path: Path) -> None:
    """An 8000² grey JPEG (1 MB on disk, ~0.4 s to decode and measure)."""
    ramp = np.linspace(0, 255, 8000, dtype=np.float32)
    Image.fromarray(((ramp[:, None] + ramp[None, :]) / 2).astype(np.uint8), mode="L").save(path)


@pytest.fixture(scope="module")
def loaded(server_url: str, tmp_path_factory):
    """A database with N_BASE studies in space tiny-random and a 1-epoch checkpoint
    registered as space ``trained`` (what reembed fills). They are loaded (and trained
    on) from a small image, which is then replaced by the slow one: reembed and train
    read images by path, so the runs to kill are slow without a slow setup."""
    from casebase.db.connection import connect
    from casebase.ingest.pipeline import IngestOptions, ingest
    from casebase.train.loop import train
    from casebase.train.spaces import add_checkpoint_space

    folder = tmp_path_factory.mktemp("kill")
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(folder / "base.png")
    _slow_jpeg(folder / "slow.jpg")
    url = make_database(server_url, "t_kill")
    options = IngestOptions(batch="base", model="tiny-random", workers=0, progress=False)
    summary = ingest(_manifest(folder, "BASE", N_BASE, "base.png"), options, url=url)
    assert summary.loaded == N_BASE, summary
    with connect(url) as conn:
        run = train(
            conn, space="tiny-random", text="label:label", epochs=1, out=folder / "run",
            batch_size=16, holdout=0.3, workers=0, progress=False, device="cpu",
        )  # fmt: skip
        add_checkpoint_space(conn, run.checkpoint, name="trained")
        conn.commit()
    (folder / "base.png").write_bytes((folder / "slow.jpg").read_bytes())
    yield url, folder
    drop_database(server_url, "t_kill")


def test_kill_9_of_ingest_leaves_no_process(loaded) -> None:
    url, folder = loaded
    manifest = _manifest(folder, "KILL", 400, "slow.jpg")
    kill_mid_run(["ingest", str(manifest), "--batch", "killed", "--model", "tiny-random",
                  "--workers", "2", "--batch-size", "16", "--no-progress"], url)  # fmt: skip


def test_kill_9_of_reembed_leaves_no_process(loaded) -> None:
    url, _ = loaded
    kill_mid_run(["reembed", "--from", "tiny-random", "--to", "trained", "--workers", "1",
                  "--batch-size", "16", "--device", "cpu", "--no-progress"], url)  # fmt: skip


def test_kill_9_of_train_leaves_no_process(loaded) -> None:
    url, folder = loaded
    kill_mid_run(["train", "--space", "tiny-random", "--text", "label:label", "--epochs", "50",
                  "--workers", "1", "--batch-size", "32", "--holdout", "0.3", "--device", "cpu",
                  "--out", str(folder / "killed_run"), "--no-progress"], url)  # fmt: skip
