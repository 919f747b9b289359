"""A process whose DataLoader workers are busy when it is killed (for test_workers.py).

``python -m tests.worker_child stream DIR``: tiny-random ``embed_stream`` over the images in
DIR with 2 workers and a loader that takes a second per image, so that a worker is mid-task
(with batches queued) whenever the test kills this process.
``python -m tests.worker_child loader``: a plain DataLoader with casebase's
``worker_init``, as the training loop builds it, over a slow dataset.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

SLOW_S = 1.0


def slow_load(path: Path):
    """An image and 256 KiB of "measurements": a few batches of results fill the pipe
    to the parent, which is what kept orphaned workers from exiting."""
    from casebase.imaging.images import load_image

    time.sleep(SLOW_S)
    return load_image(path), bytes(256 * 1024)


class SlowDataset:
    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> bytes:
        time.sleep(SLOW_S)
        return bytes(256 * 1024)


def stream(folder: Path) -> None:
    from casebase.embedding import load_encoder

    encoder = load_encoder("tiny-random", device="cpu")
    images = sorted(folder.glob("*.png"))
    for _ in encoder.embed_stream(images, slow_load, batch_size=2, workers=2, with_extra=True):
        pass


def loader() -> None:
    from torch.utils.data import DataLoader

    from casebase.embedding.workers import worker_init

    batches = DataLoader(
        SlowDataset(), batch_size=2, num_workers=2, collate_fn=list, worker_init_fn=worker_init()
    )
    for _ in batches:
        pass


if __name__ == "__main__":
    if sys.argv[1] == "stream":
        stream(Path(sys.argv[2]))
    else:
        loader()
