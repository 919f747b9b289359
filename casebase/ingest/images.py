"""Decode any supported image file into an RGB :class:`PIL.Image.Image`.

One entry point, :func:`load_image`, for JPEG, PNG, TIFF, BMP (8- or 16-bit; grey, RGB,
RGBA, palette) and DICOM (dispatched to :mod:`casebase.ingest.dicom`). It is a module-level
function with no state, so it pickles into DataLoader worker processes. Every failure is an
:class:`~casebase.errors.InputError` with a one-line reason that goes to the rejects table:

    file not found: <path>
    not a file: <path>
    zero-byte file: <path>
    not an image (<name>: <what it looks like>)
    truncated or corrupt image (<name>: <decoder message>)
    image too large (<name>: <decoder message>)

Truncated files are never "repaired" (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off): a
half-grey image would be embedded as if it were real.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from casebase.errors import ConfigError, InputError

__all__ = [
    "DICOM_SUFFIXES",
    "has_dicom_preamble",
    "load_image",
    "sha256_file",
    "to_uint8",
]

log = logging.getLogger(__name__)

#: File name endings read as DICOM even without the DICM preamble check.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})

#: Percentiles that map >8-bit data without a window to 0..255: robust to a few hot or dead
#: pixels (a single 65535 pixel would otherwise turn the whole image black).
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (content identity for re-ingest)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"not a file: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read file ({path}: {exc.strerror or exc})") from exc
    return digest.hexdigest()


def has_dicom_preamble(path: str | Path) -> bool:
    """True when the file has the 128-byte preamble followed by ``DICM`` (PS3.10 7.1).

    This is how a DICOM file is recognised: names in PACS exports rarely end in ``.dcm``.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


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


def _describe_non_image(path: Path) -> str:
    """What a file that no decoder recognises looks like, without echoing its content."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"%PDF"):
        return "looks like a PDF"
    if head.startswith(b"PK\x03\x04"):
        return "looks like a ZIP archive"
    if head.lstrip().startswith((b"<!DOCTYPE html", b"<html", b"<HTML")):
        return "looks like an HTML page"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised format"
    return "looks like a text file"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode → RGB. Alpha is composited on black (radiograph background)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` into an RGB image, EXIF orientation applied; DICOM via its header.

    Raises ``InputError`` with one of the reasons listed in the module docstring.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read file ({path}: {exc.strerror or exc})") from exc
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    if size == 0:
        raise InputError(f"zero-byte file: {path}")

    if path.suffix.lower() in DICOM_SUFFIXES or has_dicom_preamble(path):
        try:
            from casebase.ingest import dicom
        except ImportError as exc:  # pydicom is the optional `dicom` extra
            raise ConfigError(
                f"reading DICOM needs pydicom: pip install 'casebase[dicom]' ({exc})"
            ) from exc
        return dicom.dicom_to_image(path).convert("RGB")

    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UnidentifiedImageError:
        raise InputError(f"not an image ({path.name}: {_describe_non_image(path)})") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image too large ({path.name}: {exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"truncated or corrupt image ({path.name}: {reason})") from exc
