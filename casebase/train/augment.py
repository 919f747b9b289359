"""Training images: augmentations that keep the anatomy, and a cache of decoded films.

Why not open_clip's training transform: it is a ``RandomResizedCrop`` to a square, which
on a non-square film (a 300x162 knee crop) falls back to a centre crop of aspect 4:3 and
throws away a third of the joint, while the ingest transform sees the whole film; the
model trains on one geometry and is used on another. Here every training image goes
through the *same* transform ingest uses (the model's ``preprocess_cfg``: letterbox,
squash or crop), after augmentations that a radiograph can plausibly show:

- a small rotation, zoom and shift (positioning), one affine resample, black fill;
- gamma, contrast and brightness (exposure and processing), one lookup table;
- optionally a horizontal flip (``hflip``): right for knees, hands and hips, whose
  mirror image is the other side's anatomy, wrong for chests (the heart is on the left).

Nothing here changes labels: a grade stays visible after a 7° rotation or a 15 % zoom.

Random numbers come from torch's global generator, which the training loop seeds per
epoch (and DataLoader seeds per worker), so a re-run augments identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Augment", "ImageCache", "TrainTransform"]


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths; ``Augment.off()`` turns them all off."""

    rotate: float = 7.0  # degrees, uniform in ±rotate
    zoom: tuple[float, float] = (1.0, 1.15)  # scale factor (> 1 zooms in)
    shift: float = 0.04  # fraction of the side, uniform in ±shift
    gamma: tuple[float, float] = (0.8, 1.25)  # log-uniform
    contrast: float = 0.15  # factor uniform in 1 ± contrast, about mid-grey
    brightness: float = 0.08  # added, uniform in ±brightness (0..1 scale)
    hflip: bool = False

    @classmethod
    def off(cls) -> Augment:
        return cls(0.0, (1.0, 1.0), 0.0, (1.0, 1.0), 0.0, 0.0, False)

    @property
    def active(self) -> bool:
        return self != Augment.off()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __call__(self, image: Any) -> Any:
        """A randomly augmented copy of a PIL image (any mode), same size."""
        import torch
        from PIL import Image

        u = torch.rand(7).tolist()
        if self.rotate or self.shift or self.zoom != (1.0, 1.0):
            angle = math.radians((2 * u[0] - 1) * self.rotate)
            zoom = self.zoom[0] + u[1] * (self.zoom[1] - self.zoom[0])
            w, h = image.size
            tx, ty = (2 * u[2] - 1) * self.shift * w, (2 * u[3] - 1) * self.shift * h
            cx, cy = w / 2, h / 2
            # PIL maps each output pixel back to its input: in = c + R(-a)/zoom (out - c - t)
            a, b = math.cos(angle) / zoom, math.sin(angle) / zoom
            d, e = -math.sin(angle) / zoom, math.cos(angle) / zoom
            c = cx - a * (cx + tx) - b * (cy + ty)
            f = cy - d * (cx + tx) - e * (cy + ty)
            image = image.transform(
                image.size, Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR
            )
        if self.hflip and u[4] < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.gamma != (1.0, 1.0) or self.contrast or self.brightness:
            lo, hi = math.log(self.gamma[0]), math.log(self.gamma[1])
            gamma = math.exp(lo + u[5] * (hi - lo))
            u2 = torch.rand(2).tolist()
            contrast = 1 + (2 * u2[0] - 1) * self.contrast
            shift = (2 * u2[1] - 1) * self.brightness
            lut = [
                round(255 * min(1.0, max(0.0, ((v / 255) ** gamma - 0.5) * contrast + 0.5 + shift)))
                for v in range(256)
            ]
            image = image.point(lut * len(image.getbands()))
        return image


class ImageCache:
    """Decoded training films kept in memory, reduced to at most ``side`` pixels.

    Decoding a PNG or a DICOM costs more than augmenting it, and training reads every
    image once per epoch: keeping the decoded film (grey films as one band) saves that.
    Films are reduced so their long side is at most ``side`` (twice the model's input:
    enough for a 15 % zoom), and caching stops at ``max_bytes``; images past it are
    decoded each time. The cache lives in the process that reads, so it helps the
    default ``workers=0`` on CPU; with worker processes each one starts empty.
    """

    def __init__(self, side: int, max_bytes: int = 1 << 30) -> None:
        self.side, self.max_bytes = side, max_bytes
        self.bytes = 0
        self._images: dict[str, Any] = {}

    def get(self, uri: str) -> Any:
        image = self._images.get(uri)
        if image is not None:
            return image
        from PIL import Image

        from casebase.imaging.images import load_image

        image = load_image(uri, keep_grey=True)
        if max(image.size) > self.side:
            scale = self.side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        n_bytes = image.width * image.height * len(image.getbands())
        if self.bytes + n_bytes <= self.max_bytes:
            self._images[uri] = image
            self.bytes += n_bytes
        return image


@dataclass
class TrainTransform:
    """Cached film → augmentation → the model's own (ingest) transform → tensor."""

    augment: Augment
    preprocess: Callable[[Any], Any]  # casebase.embedding.Preprocess of the eval transform
    cache: ImageCache

    def __call__(self, uri: str) -> Any:
        image = self.cache.get(uri)
        if self.augment.active:
            image = self.augment(image)
        return self.preprocess(image)
