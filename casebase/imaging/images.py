"""Decode any supported image file into an RGB :class:`PIL.Image.Image`.

One entry point, :func:`load_image`, for JPEG, PNG, TIFF, BMP (8- or 16-bit; grey, RGB,
RGBA, palette) and DICOM (dispatched to :mod:`casebase.imaging.dicom`). It is a module-level
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
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from casebase.errors import ConfigError, InputError

__all__ = [
    "DICOM_SUFFIXES",
    "has_dicom_preamble",
    "load_image",
    "read_image_file",
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
            return _is_dicom_head(handle.read(_DICOM_MAGIC_AT.stop))
    except OSError:
        return False


_DICOM_MAGIC_AT = slice(128, 132)  # after the 128-byte preamble


def _is_dicom_head(head: bytes) -> bool:
    return head[_DICOM_MAGIC_AT] == b"DICM"


def _is_dicom(path: Path, data: bytes | None) -> bool:
    """By suffix or by preamble, read from ``data`` when the file's bytes are at hand."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return has_dicom_preamble(path) if data is None else _is_dicom_head(data)


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


def _describe_non_image(head: bytes) -> str:
    """What a file that no decoder recognises looks like (from its first 512 bytes),
    without echoing its content."""
    head = head[:512]
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


def _to_rgb(image: Image.Image, *, keep_grey: bool = False) -> Image.Image:
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


def _check_file(path: Path) -> None:
    """A regular, non-empty file, or ``InputError`` with the module's reasons."""
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


def read_image_file(path: str | Path) -> bytes:
    """All bytes of an image file, after the checks of :func:`load_image` (same reasons).

    Ingest hashes these bytes and decodes them with ``load_image(path, data=...)``: the
    file is read once, and the pixels embedded are those of the bytes hashed.
    """
    path = Path(path)
    _check_file(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read file ({path}: {exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"zero-byte file: {path}")
    return data


def load_image(
    path: str | Path, *, data: bytes | None = None, keep_grey: bool = False
) -> Image.Image:
    """Decode ``path`` into an RGB image, EXIF orientation applied; DICOM via its header.

    ``data``, when given, is the file's content as :func:`read_image_file` returned it:
    it is decoded instead of reading the file again (DICOM is still read from ``path``).
    With ``keep_grey``, an image that decodes to one grey band is returned as 8-bit
    ``L`` (the pixels its RGB copy would repeat three times), not RGB.
    Raises ``InputError`` with one of the reasons listed in the module docstring.
    """
    path = Path(path)
    if data is None:
        _check_file(path)
    elif not data:
        raise InputError(f"zero-byte file: {path}")

    if _is_dicom(path, data):
        try:
            from casebase.imaging import dicom
        except ImportError as exc:  # pydicom is the optional `dicom` extra
            raise ConfigError(
                f"reading DICOM needs pydicom: pip install 'casebase[dicom]' ({exc})"
            ) from exc
        image = dicom.dicom_to_image(path)
        return image if keep_grey and image.mode == "L" else image.convert("RGB")

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image, keep_grey=keep_grey)
    except UnidentifiedImageError:
        if data is None:
            with open(path, "rb") as handle:
                data = handle.read(512)
        raise InputError(f"not an image ({path.name}: {_describe_non_image(data)})") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image too large ({path.name}: {exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"truncated or corrupt image ({path.name}: {reason})") from exc
