"""Pixel conversion shared by image and DICOM decoding: any range to 8 bits, any mode to RGB.

Kept apart from the decoders so that the DICOM reader and the plain-image reader use one
mapping to 0..255 (the pixels embedded must not depend on which reader made them) without
importing each other.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["HIGH_PERCENTILE", "LOW_PERCENTILE", "to_rgb", "to_uint8"]

#: Percentiles that map >8-bit data without a window to 0..255: robust to a few hot or dead
#: pixels (a single 65535 pixel would otherwise turn the whole image black).
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


def to_uint8(arr: np.ndarray, *, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linearly map ``arr`` to uint8, ``low`` → 0 and ``high`` → 255 (clipped).

    Without ``low``/``high`` the :data:`LOW_PERCENTILE`/:data:`HIGH_PERCENTILE` percentiles
    of the finite values are used. A constant image maps to 0 (not a division by zero).
    """
    data = np.asarray(arr, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    if low is None or high is None:
        p_low, p_high = np.percentile(finite, [LOW_PERCENTILE, HIGH_PERCENTILE])
        low = float(p_low) if low is None else low
        high = float(p_high) if high is None else high
    if high <= low:
        return np.where(data > low, 255, 0).astype(np.uint8)
    scaled = (np.nan_to_num(data, nan=low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image, *, keep_grey: bool = False) -> Image.Image:
    """Any PIL mode → RGB (or ``L`` for grey images with ``keep_grey``). Alpha is
    composited on black (radiograph background)."""
    if image.mode == "RGB" or (keep_grey and image.mode == "L"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = Image.fromarray(to_uint8(np.asarray(image)), mode="L")
        return grey if keep_grey else grey.convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        if image.getchannel("A").getextrema() == (255, 255):
            return image.convert("RGB")  # opaque: compositing would change no pixel
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")
