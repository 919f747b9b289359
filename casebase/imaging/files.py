"""Image files as bytes: existence checks, content hashes, and recognising DICOM.

Apart from :mod:`casebase.imaging.images` (which decodes) so that the DICOM reader can
recognise a DICOM file without importing the module that dispatches to it. Every failure
is an :class:`~casebase.errors.InputError` with the one-line reasons listed in
:mod:`casebase.imaging.images`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from casebase.errors import InputError

__all__ = [
    "DICOM_SUFFIXES",
    "check_file",
    "has_dicom_preamble",
    "is_dicom",
    "read_image_file",
    "sha256_file",
]

#: File name endings read as DICOM even without the DICM preamble check.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})

_CHUNK = 1 << 20
_DICOM_MAGIC_AT = slice(128, 132)  # after the 128-byte preamble


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


def _is_dicom_head(head: bytes) -> bool:
    return head[_DICOM_MAGIC_AT] == b"DICM"


def is_dicom(path: Path, data: bytes | None) -> bool:
    """By suffix or by preamble, read from ``data`` when the file's bytes are at hand."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return has_dicom_preamble(path) if data is None else _is_dicom_head(data)


def check_file(path: Path) -> None:
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
    """All bytes of an image file, after the checks of ``load_image`` (same reasons).

    Ingest hashes these bytes and decodes them with ``load_image(path, data=...)``: the
    file is read once, and the pixels embedded are those of the bytes hashed.
    """
    path = Path(path)
    check_file(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read file ({path}: {exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"zero-byte file: {path}")
    return data
