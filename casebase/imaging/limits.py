"""How long a stored value may be, and which characters it may hold.

Every text value of a batch (manifest cell, DICOM header value, ``--set`` value) is
checked here before anything is written, so that a value can only ever make its own row
a reject: PostgreSQL refuses a NUL byte in ``text`` and a B-tree entry over ~2.7 kB,
and either refusal used to fail a whole chunk of good studies. The limits, and why:

=======================  ===========  =====================================================
value                    limit        why
=======================  ===========  =====================================================
study id                 128 chars    B-tree entries (the study key, each leaf's covering
                                      filter index); DICOM UIDs are at most 64
patient id               128 chars    only its salted hash is stored; longer is a mix-up
accession number         128 chars    DICOM's is 16
image path               4,096 chars  Linux ``PATH_MAX``
coded values             64 chars     modality, body part, view, age, sex, date: codes
flags                    16 per row,  flags live in each leaf's covering B-tree entry, with
                         64 chars     the measured ones (``FLAG_PATTERN``)
report section           65,536 chars ``findings``, ``impression`` and ``report`` each;
                                      real reports are a few kB (covid notes: 5.5 kB)
extra column name        64 chars     a JSON key of ``attributes``
extra column value       16,384 chars free text at most a few paragraphs
batch name               64 chars     on every embedding row (covering index)
=======================  ===========  =====================================================

A value over its limit is rejected, never truncated: a report cut at 64 kB loses its
impression (which comes last) and the findings counted from it would silently differ from
what the radiologist wrote.

Characters: identifiers and codes (everything but free text) may hold no control
character at all (Unicode category Cc: U+0000–U+001F, U+007F–U+009F). Free text (the
report sections and extra columns) may hold tab, LF and CR; a NUL rejects the row (it
cannot be stored, and a NUL in a text file means a broken export whose other bytes may
be wrong too); the other control characters are kept as received in the restricted raw
tables and replaced by a space in the sanitised text (:mod:`casebase.ingest.sanitize`).

Reasons never quote the value itself, only the column, the length or the character's
code point: they are stored in ``casebase.rejects``, which analysts read.
"""

from __future__ import annotations

import re

from casebase.errors import InputError

__all__ = [
    "ATTRIBUTE_KEY_MAX",
    "ATTRIBUTE_VALUE_MAX",
    "BATCH_NAME_MAX",
    "CODE_MAX",
    "FLAGS_MAX",
    "ID_MAX",
    "PATH_MAX",
    "REPORT_MAX",
    "check_batch_name",
    "check_code",
    "check_count",
    "check_text",
    "display",
]

ID_MAX = 128
PATH_MAX = 4096
CODE_MAX = 64
FLAGS_MAX = 16
REPORT_MAX = 65_536
ATTRIBUTE_KEY_MAX = 64
ATTRIBUTE_VALUE_MAX = 16_384
BATCH_NAME_MAX = 64

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEXT_CONTROL = re.compile(r"\x00")


def _first(pattern: re.Pattern[str], value: str) -> str | None:
    found = pattern.search(value)
    if found is None:
        return None
    char = found.group(0)
    name = "a NUL byte" if char == "\x00" else f"a control character (U+{ord(char):04X})"
    return f"{name} at character {found.start() + 1}"


def _check_length(column: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InputError(f"{column} is {len(value):,} characters long (limit {limit:,})")


def check_code(column: str, value: str, limit: int = CODE_MAX) -> str:
    """An identifier or a code: no control character, at most ``limit`` characters.

    Returns ``value``; raises ``InputError`` naming ``column`` and what is wrong."""
    where = _first(_CONTROL, value)
    if where:
        raise InputError(f"{column} contains {where}")
    _check_length(column, value, limit)
    return value


def check_text(column: str, value: str, limit: int) -> str:
    """Free text: no NUL, at most ``limit`` characters (other controls are the
    sanitiser's business). Returns ``value``."""
    where = _first(_TEXT_CONTROL, value)
    if where:
        raise InputError(f"{column} contains {where}")
    _check_length(column, value, limit)
    return value


def check_count(column: str, n: int, limit: int) -> None:
    if n > limit:
        raise InputError(f"{column} has {n:,} entries (limit {limit:,})")


def check_batch_name(name: str) -> str:
    """A batch name: 1–64 characters, no control character (it is on every row)."""
    if not name or not name.strip():
        raise InputError("the batch name is empty")
    return check_code("the batch name", name, BATCH_NAME_MAX)


def display(value: str, limit: int = 200) -> str:
    """``value`` made safe to show on one line and to store: control characters as
    ``\\xNN`` escapes, at most ``limit`` characters (``…`` marks a cut). For values that
    are not private (file names, row references), never for patient values."""
    escaped = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", value)
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"
