"""Binary COPY into casebase's tables: each table's columns and their wire types, once.

Ingest (``ingest/load.py``) and re-embedding (``train/reembed.py``) both write embedding
rows; with one :data:`EMBEDDING_ROWS` they cannot disagree on a column's order or type
(binary COPY has no casts: a wrong type is an error at best, a wrong value at worst).
``tests/test_bulk.py`` checks every spec against the migrated schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = [
    "ATTRIBUTES_RAW_ROWS",
    "EMBEDDING_ROWS",
    "FINDING_ROWS",
    "IMAGE_ROWS",
    "REPORT_RAW_ROWS",
    "REPORT_ROWS",
    "SPECS",
    "STUDY_ROWS",
    "CopySpec",
    "copy_rows",
]


@dataclass(frozen=True)
class CopySpec:
    """The columns a binary COPY writes into ``casebase.<table>``, each with its type name
    as psycopg's ``set_types`` takes it (``int8``, ``text[]``, ``vector``…)."""

    table: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(kind for _, kind in self.columns)

    @property
    def sql(self) -> str:
        return f"COPY casebase.{self.table} ({', '.join(self.names)}) FROM STDIN (FORMAT BINARY)"


def copy_rows(conn: Connection, spec: CopySpec, rows: Iterable[Sequence[object]]) -> None:
    """Write ``rows`` (tuples in ``spec``'s column order) in the caller's transaction."""
    with conn.cursor() as cur, cur.copy(spec.sql) as copy:
        copy.set_types(list(spec.types))
        for row in rows:
            copy.write_row(row)


STUDY_ROWS = CopySpec("study", (
    ("study_pk", "int8"), ("study_id", "text"), ("patient_key", "text"), ("modality", "text"),
    ("body_part", "text"), ("view", "text"), ("age", "float4"), ("sex", "text"),
    ("study_date", "date"), ("flags", "text[]"), ("batch", "text"),
    ("content_sha256", "text"), ("attributes", "jsonb"),
))  # fmt: skip

IMAGE_ROWS = CopySpec("image", (
    ("image_pk", "int8"), ("study_pk", "int8"), ("uri", "text"), ("sha256", "text"),
    ("size_bytes", "int8"), ("width", "int4"), ("height", "int4"), ("view", "text"),
    ("flags", "text[]"), ("quality", "jsonb"),
))  # fmt: skip

REPORT_ROWS = CopySpec("report", (
    ("study_pk", "int8"), ("findings", "text"), ("impression", "text"), ("removed", "text[]"),
))  # fmt: skip

REPORT_RAW_ROWS = CopySpec("report_raw", (
    ("study_pk", "int8"), ("raw_text", "text"), ("accession", "text"),
))  # fmt: skip

ATTRIBUTES_RAW_ROWS = CopySpec("attributes_raw", (
    ("study_pk", "int8"), ("attributes", "jsonb"),
))  # fmt: skip

FINDING_ROWS = CopySpec("finding", (
    ("study_pk", "int8"), ("finding", "text"), ("status", "text"), ("backend", "text"),
    ("version", "text"), ("evidence", "text"), ("location", "jsonb"),
))  # fmt: skip

#: An embedding row: the vector and the filter columns denormalised onto it (a search
#: filters inside the HNSW scan only on columns of the same row).
EMBEDDING_ROWS = CopySpec("embedding", (
    ("space_id", "int2"), ("modality", "text"), ("image_pk", "int8"), ("study_pk", "int8"),
    ("study_id", "text"), ("patient_key", "text"), ("age", "float4"), ("sex", "text"),
    ("view", "text"), ("flags", "text[]"), ("study_date", "date"), ("batch", "text"),
    ("vec", "vector"),
))  # fmt: skip

SPECS = (
    STUDY_ROWS,
    IMAGE_ROWS,
    REPORT_ROWS,
    REPORT_RAW_ROWS,
    ATTRIBUTES_RAW_ROWS,
    FINDING_ROWS,
    EMBEDDING_ROWS,
)
