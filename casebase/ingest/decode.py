"""What a decode worker does for one image: bytes → hash, pixels, quality.

Runs in DataLoader worker processes (so it is a module-level function), which
keeps hashing, decoding and quality statistics off the process running the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from casebase.ingest.images import load_image
from casebase.ingest.quality import measure_quality, quality_flags
from casebase.ingest.studies import ImageInput


@dataclass(frozen=True)
class ImageFacts:
    sha256: str
    size_bytes: int
    width: int
    height: int
    quality: dict
    flags: tuple[str, ...]


def decode_image(item: tuple[ImageInput, str]):
    """``(image, modality)`` → ``(PIL image, ImageFacts)``; raises InputError for bad files."""
    image_input, modality = item
    image = load_image(image_input.path)
    data = image_input.path.read_bytes()
    quality = measure_quality(image)
    facts = ImageFacts(
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        width=image.width,
        height=image.height,
        quality=quality.as_dict(),
        flags=quality_flags(quality, modality=modality),
    )
    return image, facts
