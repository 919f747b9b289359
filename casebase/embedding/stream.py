"""Embedding a stream of items: decode + preprocess in DataLoader worker processes, embed
in this one, batches back in input order.

``Encoder.embed_stream`` is this module's :func:`embed_stream`. The DataLoader machinery
lives here so that the encoder reads as the model's API; the worker processes' policy
(how many, priority, dying with their parent) is :mod:`casebase.embedding.workers`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import numpy as np

from casebase.embedding.messages import one_line
from casebase.embedding.workers import default_workers, worker_init
from casebase.errors import InputError

__all__ = ["Embedder", "embed_stream"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: About the least CPU time a decode worker spends on one image (read, decode, resize):
#: a model faster than this per image, times the workers, runs single-threaded in
#: ``embed_stream`` (see ``_cpu_threads_for_stream``).
_DECODE_SECONDS_PER_IMAGE = 0.002


class Embedder(Protocol):
    """What streaming needs of an ``Encoder`` (so that this module need not import it)."""

    device: str
    spec: Any  # a SpaceSpec: .dim and .image_size are used

    @property
    def preprocess(self) -> Callable[[Any], Any]: ...

    def encode_images(self, batch: Any) -> np.ndarray: ...


def embed_stream(
    encoder: Embedder,
    items: Iterable[T],
    load: Callable[[T], Any],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    with_extra: bool = False,
) -> Iterator[tuple[list[Any], np.ndarray, list[tuple[T, str]]]]:
    """Decode + preprocess in worker processes, embed here; batches in input order.

    With ``with_extra=True``, ``load`` returns ``(image, extra)`` and ``ok_items``
    holds ``(item, extra)`` pairs: what the worker measured while it had the
    pixels (hashes, quality statistics) comes back without decoding twice.

    Yields ``(ok_items, vectors, failed)`` per batch: ``vectors[i]`` belongs
    to ``ok_items[i]``; ``failed`` lists ``(item, one-line reason)`` for items
    whose ``load`` or preprocessing raised (InputError, PIL errors, ...).
    A bad item never stops the stream. ``load`` must be picklable (a
    module-level function) when ``workers > 0``. ``items`` is materialised
    as a list (workers index into it; items should be small, e.g. rows).
    ``progress`` is called with the number of items finished per batch.

    Workers assemble whole batches, so one tensor per batch crosses process
    boundaries, and DataLoader keeps ``prefetch_factor`` batches per worker
    ready so the model never waits on decoding. Workers die with this process.
    """
    from torch.utils.data import DataLoader

    items = list(items)
    if not items:
        return
    device = encoder.device
    workers = default_workers(device) if workers is None else workers
    if workers < 0 or batch_size < 1:
        raise InputError(f"need workers >= 0 and batch_size >= 1, got {workers}, {batch_size}")
    loader: Any = DataLoader(
        _StreamDataset(items, load, encoder.preprocess, with_extra),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.startswith("cuda"),
        prefetch_factor=4 if workers else None,
        worker_init_fn=worker_init(yield_to_model=device == "cpu"),
    )
    batches = iter(loader)  # workers start decoding while the probe below runs
    with _cpu_threads_for_stream(encoder, workers):
        for ok_idx, batch, failed_idx, extras in batches:
            vectors = (
                encoder.encode_images(batch)
                if batch is not None
                else np.empty((0, encoder.spec.dim), np.float32)
            )
            failed = [(items[i], reason) for i, reason in failed_idx]
            for item, reason in failed:
                logger.debug("cannot embed %r: %s", item, reason)
            if progress is not None:
                progress(len(ok_idx) + len(failed))
            ok = [items[i] for i in ok_idx]
            yield (list(zip(ok, extras, strict=True)) if with_extra else ok), vectors, failed


@contextlib.contextmanager
def _cpu_threads_for_stream(encoder: Embedder, workers: int) -> Iterator[None]:
    """One intra-op thread for a model much cheaper than decoding, while streaming.

    On CPU, a model that embeds an image in well under the time a decode worker
    needs for it (tiny-random: ~0.1 ms against ~5 ms) is never the bottleneck of
    ``embed_stream``; with several intra-op threads it only spins at each op's
    barrier while the workers hold the cores, and that spinning takes their CPU.
    A single-threaded probe on blank images decides; larger models keep torch's
    threads. The vectors are the same bit for bit on one thread or several (tested
    for tiny-random, and checked for ViT-B-32); the probe's are thrown away.
    """
    import torch

    threads = torch.get_num_threads()
    if encoder.device != "cpu" or workers == 0 or threads == 1:
        yield
        return
    size = encoder.spec.image_size
    torch.set_num_threads(1)
    cheap = False
    try:
        # One image twice (the first call also warms the model up): a large model
        # shows itself at once (~0.1 s for a ViT-B); then 16, as one image is
        # mostly per-call overhead for a small model.
        for n, too_slow in ((1, 0.1), (1, 10 * _DECODE_SECONDS_PER_IMAGE), (16, None)):
            start = time.thread_time()  # CPU time: other jobs on the host do not count
            encoder.encode_images(torch.zeros(n, 3, size, size))
            per_image = (time.thread_time() - start) / n
            if too_slow is not None and per_image > too_slow:
                break
        else:
            cheap = per_image * workers < _DECODE_SECONDS_PER_IMAGE
    finally:
        if not cheap:
            torch.set_num_threads(threads)
    if cheap:
        logger.debug("model is cheaper than decoding: 1 intra-op thread while streaming")
    try:
        yield
    finally:
        if cheap:
            torch.set_num_threads(threads)


class _StreamDataset:
    """Map-style dataset (no torch import needed): index → (index, tensor | None, reason)."""

    def __init__(
        self,
        items: list[Any],
        load: Callable[[Any], Any],
        preprocess: Callable[[Any], Any],
        with_extra: bool = False,
    ) -> None:
        self.items, self.load, self.preprocess = items, load, preprocess
        self.with_extra = with_extra

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None, Any]:
        try:
            loaded = self.load(self.items[index])
            image, extra = loaded if self.with_extra else (loaded, None)
            return index, self.preprocess(image), None, extra
        except Exception as exc:  # one bad image must not stop the batch
            return index, None, one_line(exc), None


def _collate(samples: list[tuple[int, Any, str | None, Any]]) -> tuple[list[int], Any, list, list]:
    import torch

    ok = [(i, t, x) for i, t, err, x in samples if err is None]
    failed = [(i, err) for i, _, err, _ in samples if err is not None]
    batch = torch.stack([t for _, t, _ in ok]) if ok else None
    return [i for i, _, _ in ok], batch, failed, [x for _, _, x in ok]
