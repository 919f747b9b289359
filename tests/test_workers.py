"""DataLoader workers die with their parent: ``kill -9`` of an ingest leaves no
``pt_data_worker`` behind.

Each test starts a real process with busy workers (tests/worker_child.py), finds its
children through /proc, kills it with SIGKILL and waits for every child to be gone. The
stream's workers return large results, as ingest's do with a study's report and quality:
without ``worker_init`` they then outlive the parent indefinitely (the result pipe is full,
and exiting waits for it to drain); the test fails that way when ``die_with_parent`` is
taken out. Ingest and reembed stream through ``embed_stream``; training builds its own
DataLoaders, and the last test checks that every DataLoader in casebase passes
``worker_init``.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")

from PIL import Image

from casebase.embedding.workers import default_workers, die_with_parent, worker_init
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

GONE_WITHIN_S = 10.0


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process; None once it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return None if state in ("Z", "X") else (state, int(ppid))


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: {pid: comm}."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                try:
                    out[int(entry.name)] = (entry / "comm").read_text().strip()
                except OSError:
                    continue
    return out


def _kill_and_watch(args: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        workers: dict[int, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            children = _children(proc.pid)
            workers = {pid: comm for pid, comm in children.items() if comm == "pt_data_worker"}
            if workers:
                break
            time.sleep(0.02)
        assert workers, f"no DataLoader worker appeared: {proc.stderr.read().decode()[-2000:]}"
        time.sleep(1.0)  # let the workers get busy with their queued batches
        children = _children(proc.pid)  # every child, not only the workers
        assert proc.poll() is None, "the process ended before it could be killed: make it longer"
        assert set(workers) <= set(children), (workers, children)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        end = time.monotonic() + GONE_WITHIN_S
        alive = dict(children)
        while alive and time.monotonic() < end:
            alive = {pid: comm for pid, comm in alive.items() if _stat(pid) is not None}
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        assert not alive, f"children of the killed process still alive after 10 s: {alive}"
    finally:
        for pid in alive:  # leave nothing behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("worker_images")
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_stream_workers_die_with_a_killed_parent(image_dir: Path) -> None:
    _kill_and_watch(["-m", "tests.worker_child", "stream", str(image_dir)])


def test_training_loader_workers_die_with_a_killed_parent() -> None:
    _kill_and_watch(["-m", "tests.worker_child", "loader"])


def test_a_parent_already_gone_ends_the_child_at_once() -> None:
    """The race the second getppid() closes: the parent died before prctl was set."""
    code = (
        "import os, sys; from casebase.embedding.workers import die_with_parent; "
        "die_with_parent(int(sys.argv[1])); sys.exit(7)"
    )
    gone = 2**22 + 12345  # above Linux's largest pid_max: no such process
    result = subprocess.run(
        [sys.executable, "-c", code, str(gone)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 1, "die_with_parent must exit when the parent is gone"


def test_a_parent_that_is_not_the_direct_parent_is_watched() -> None:
    """The fallback (forkserver/spawn start methods, no prctl): a thread polls the parent."""
    parent = subprocess.Popen(["sleep", "60"])
    code = (
        "import sys, time; from casebase.embedding.workers import die_with_parent; "
        "die_with_parent(int(sys.argv[1])); print('ready', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(parent.pid)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert child.poll() is None
        parent.kill()
        parent.wait()
        assert child.wait(timeout=GONE_WITHIN_S) == 1
    finally:
        for proc in (parent, child):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_worker_init_is_picklable_and_names_this_process() -> None:
    import pickle

    init = pickle.loads(pickle.dumps(worker_init(yield_to_model=True)))
    assert init.keywords == {"parent": os.getpid(), "niceness": 10}
    assert worker_init().keywords["niceness"] == 0
    assert callable(die_with_parent) and 1 <= default_workers() <= 8


def test_every_dataloader_in_casebase_passes_worker_init() -> None:
    """Any new DataLoader must let its workers die with it too."""
    calls = []
    for path in (REPO / "casebase").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DataLoader":
                kwargs = {k.arg: k.value for k in node.keywords}
                calls.append(path.relative_to(REPO))
                init = kwargs.get("worker_init_fn")
                assert init is not None, f"{path}:{node.lineno}: DataLoader without worker_init_fn"
                assert "worker_init" in ast.unparse(init), f"{path}:{node.lineno}"
    assert len(calls) >= 3, calls  # embed_stream, training epochs, held-out evaluation
