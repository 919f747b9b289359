"""What a batch run is asked to do (``IngestOptions``) and what it did (``IngestSummary``).

Values that cross from the command line or the client into :mod:`casebase.ingest.pipeline`,
and the shard arithmetic both sides need.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from casebase.errors import InputError

__all__ = ["IngestOptions", "IngestSummary", "in_shard", "parse_shard"]


@dataclass(frozen=True)
class IngestOptions:
    batch: str
    model: str | None = None
    pretrained: str | None = None
    checkpoint: str | None = None
    images_root: str | None = None
    allow_outside_root: bool = False  # image paths may lead outside the images root
    attributes: tuple[str, ...] | None = None  # extra columns analysts see; None: default
    columns: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)
    device: str | None = None
    batch_size: int = 32
    precision: str = "fp32"  # fp32, bf16 or fp16 autocast (embedding/precision.py)
    workers: int | None = None
    chunk_size: int = 256
    progress: bool | None = None  # None: a bar only on a terminal


@dataclass(frozen=True)
class IngestSummary:
    batch: str
    space: str
    shard: str
    loaded: int
    skipped: int
    rejected: int
    images: int
    seconds: float
    per_modality: dict[str, dict[str, int]]
    complete: bool

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 2)}

    def render(self) -> str:
        lines = [
            f"batch {self.batch} (shard {self.shard}, space {self.space}): "
            f"{self.loaded} loaded, {self.skipped} skipped (already there), "
            f"{self.rejected} rejected — {self.images} images in {self.seconds:.1f} s "
            f"({self.images_per_s:.1f} images/s)"
            + ("" if self.complete else "; other shards still running"),
        ]
        for modality, counts in sorted(self.per_modality.items()):
            lines.append(
                f"  {modality:<4} loaded {counts.get('loaded', 0):>6}  "
                f"skipped {counts.get('skipped', 0):>6}  rejected {counts.get('rejected', 0):>6}"
            )
        if self.rejected:
            lines.append(f"  see: SELECT * FROM casebase.rejects WHERE batch = '{self.batch}'")
        return "\n".join(lines)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text}: need 0 <= I < N")
    return i, n


def in_shard(study_id: str, shard: tuple[int, int]) -> bool:
    i, n = shard
    return n == 1 or int(hashlib.sha256(study_id.encode()).hexdigest()[:12], 16) % n == i
