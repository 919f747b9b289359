"""Decode any supported image file into an RGB :class:`PIL.Image.Image`.

One entry point, :func:`load_image`, for JPEG, PNG, TIFF, BMP (8- or 16-bit; grey, RGB,
RGBA, palette) and DICOM (dispatched to :mod:`casebase.imaging.dicom_pixels`). It is a
module-level function with no state, so it pickles into DataLoader worker processes. Every
failure is an :class:`~casebase.errors.InputError` with a one-line reason that goes to the
rejects table:

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

import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from casebase.errors import ConfigError, InputError
from casebase.imaging.files import check_file, is_dicom
from casebase.imaging.pixels import to_rgb

__all__ = ["load_image"]


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


def load_image(
    path: str | Path, *, data: bytes | None = None, keep_grey: bool = False
) -> Image.Image:
    """Decode ``path`` into an RGB image, EXIF orientation applied; DICOM via its header.

    ``data``, when given, is the file's content as
    :func:`~casebase.imaging.files.read_image_file` returned it: it is decoded instead of
    reading the file again (DICOM is still read from ``path``).
    With ``keep_grey``, an image that decodes to one grey band is returned as 8-bit
    ``L`` (the pixels its RGB copy would repeat three times), not RGB.
    Raises ``InputError`` with one of the reasons listed in the module docstring.
    """
    path = Path(path)
    if data is None:
        check_file(path)
    elif not data:
        raise InputError(f"zero-byte file: {path}")

    if is_dicom(path, data):
        try:
            from casebase.imaging.dicom_pixels import dicom_to_image
        except ImportError as exc:  # pydicom is the optional `dicom` extra
            raise ConfigError(
                f"reading DICOM needs pydicom: pip install 'casebase[dicom]' ({exc})"
            ) from exc
        image = dicom_to_image(path)
        return image if keep_grey and image.mode == "L" else image.convert("RGB")

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image, keep_grey=keep_grey)
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
