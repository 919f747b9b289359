"""Decode worker processes of casebase's DataLoaders: how many, at what priority, and that
they die with the process that started them.

Every DataLoader in casebase (``embed_stream``, training) passes :func:`worker_init` as its
``worker_init_fn``. A worker then dies as soon as its parent does: an ingest killed with
``kill -9`` used to leave its ``pt_data_worker`` processes decoding their queued batches
for minutes (torch's own watchdog only looks between tasks). On Linux the kernel does it
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere, or when the loader's process is not the
worker's direct parent (a ``forkserver`` or ``spawn`` start method), a daemon thread in the
worker polls the parent and exits within a second of its death.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["default_workers", "die_with_parent", "worker_init"]

logger = logging.getLogger(__name__)

#: How much lower than the model a decode worker runs on a CPU-only host (``os.nice``).
WORKER_NICENESS = 10
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCH_INTERVAL_S = 0.5


def default_workers(device: str = "cpu") -> int:
    """Decode workers for ``embed_stream``: at most 8 on CPU, 16 on a GPU host.

    On a GPU host one core is left to the process feeding the GPU, and the rest decode:
    a ViT-bigG at 448 px embeds 100-200 images/s on one H100-class GPU, and reading a
    full-size radiograph, resizing it to 448 px and measuring its quality takes one core
    tens of milliseconds, so fewer workers would leave the GPU waiting. On CPU there is one
    per core: the workers run at a lower priority than the model (``worker_init(
    yield_to_model=True)``), so they take the cores only when the model leaves them idle,
    and a model cheaper than decoding (tiny-random) then has every core decoding for it.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus) if device == "cpu" else min(16, cpus - 1))


def worker_init(*, yield_to_model: bool = False) -> Callable[[int], None]:
    """The ``worker_init_fn`` for a DataLoader created in this process.

    Each worker dies with this process (:func:`die_with_parent`). With
    ``yield_to_model`` (a CPU-only host) it also runs at a lower priority than the model:
    torch's intra-op threads wait for each other at the end of every op, so a decode
    worker that pre-empts one of them stalls them all, while decoding needs a few percent
    of the CPU and DataLoader keeps batches prefetched, so workers can run in the gaps.
    Not done on GPU hosts, where the CPU is the workers'. The result is picklable, for
    any multiprocessing start method.
    """
    return functools.partial(
        _init_worker, parent=os.getpid(), niceness=WORKER_NICENESS if yield_to_model else 0
    )


def _init_worker(worker_id: int, *, parent: int, niceness: int) -> None:
    die_with_parent(parent)
    if niceness:
        with contextlib.suppress(AttributeError, OSError):  # no os.nice on Windows
            os.nice(niceness)


def die_with_parent(parent: int) -> None:
    """Make this process exit when process ``parent`` does (call it in the child).

    On Linux, when ``parent`` is the direct parent, the kernel sends SIGKILL at its death
    (note: at the death of the parent *thread* that forked, which for DataLoader is the
    thread that started iterating). Otherwise a daemon thread polls. A parent that died
    before this call is seen at once, and the process exits.
    """
    if os.getppid() == parent and _set_parent_death_signal() and os.getppid() == parent:
        return  # the second look closes the race with a parent that died in between
    if not _alive(parent):
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent,), name="casebase-parent-watch", daemon=True
    ).start()


def _set_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``; False where there is no such call."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError) as exc:
        logger.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _watch_parent(parent: int) -> None:
    """Exit this process once ``parent`` is gone: re-parented (a direct parent) or no
    longer alive (an indirect one)."""
    direct = os.getppid() == parent
    while (os.getppid() == parent) if direct else _alive(parent):
        time.sleep(_WATCH_INTERVAL_S)
    os._exit(1)
