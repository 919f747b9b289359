"""The COPY specs of db/bulk.py against the migrated schema: every column exists, with the
type the binary COPY sends (binary COPY does not cast)."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from casebase.db import bulk
from casebase.db.connection import connect


def _udt(copy_type: str) -> str:
    """psycopg's type name as information_schema's udt_name (``text[]`` is ``_text``)."""
    return "_" + copy_type[:-2] if copy_type.endswith("[]") else copy_type


@pytest.mark.parametrize("spec", bulk.SPECS, ids=lambda s: s.table)
def test_spec_matches_the_table(db_url: str, spec: bulk.CopySpec) -> None:
    with connect(db_url) as conn:
        rows = conn.execute(
            "SELECT column_name, udt_name FROM information_schema.columns "
            "WHERE table_schema = 'casebase' AND table_name = %s",
            (spec.table,),
        ).fetchall()
    table = dict(rows)
    assert table, f"no table casebase.{spec.table}"
    assert len(set(spec.names)) == len(spec.names), spec.names
    wrong = {n: (t, table.get(n)) for n, t in spec.columns if table.get(n) != _udt(t)}
    assert not wrong, f"{spec.table}: spec type vs table type {wrong}"


def test_embedding_rows_fill_every_column_of_the_embedding_table(db_url: str) -> None:
    """Ingest and reembed write whole rows: a new filter column must be added to the spec.
    PostgreSQL computes the generated ones (revision 0010) from the row itself."""
    with connect(db_url) as conn:
        columns = dict(
            conn.execute(
                "SELECT column_name, is_generated FROM information_schema.columns "
                "WHERE table_schema = 'casebase' AND table_name = 'embedding'"
            ).fetchall()
        )
    assert set(bulk.EMBEDDING_ROWS.names) == {c for c, g in columns.items() if g == "NEVER"}
    assert {c for c, g in columns.items() if g != "NEVER"} == {"flag_mask", "vec_half"}


def test_copy_rows_writes_exact_values(db_url: str) -> None:
    with connect(db_url) as conn:
        conn.execute(
            "INSERT INTO casebase.ingest_batch (name, source) VALUES ('bulk', 'test') "
            "ON CONFLICT DO NOTHING"
        )
        study = (10_001, "BULK-1", "pk", "CXR", None, "PA", 41.5, "F", None, ["portable"],
                 "bulk", "abc", None)  # fmt: skip
        bulk.copy_rows(conn, bulk.STUDY_ROWS, [(*study[:-1], Jsonb({"site": "A"}))])
        got = conn.execute(
            "SELECT study_id, view, age, sex, flags, attributes FROM casebase.study "
            "WHERE study_pk = 10001"
        ).fetchone()
        conn.rollback()
    assert got == ("BULK-1", "PA", 41.5, "F", ["portable"], {"site": "A"}), got
