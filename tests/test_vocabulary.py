"""One vocabulary: the schema's CHECK constraints and the SQL functions' own checks agree
with the Python enums of casebase/imaging/vocabulary.py.

PL/pgSQL cannot import Python, so the SQL keeps its own copy of each list; these tests
read it back from a migrated database (pg_constraint, pg_proc) and call the functions
with every enum value and with bad ones.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from casebase.db import spaces
from casebase.db.connection import connect
from casebase.errors import QueryError
from casebase.imaging.vocabulary import (
    FLAG_PATTERN,
    MAX_AGE_YEARS,
    MODALITY_CODE_PATTERN,
    STATUSES,
    Modality,
    Sex,
    Status,
)
from casebase.retrieval.filters import Filters


def _literals(sql: str) -> list[str]:
    """The quoted string literals of a constraint or function source, in order."""
    return re.findall(r"'([^']*)'", sql)


def _check(conn, table: str, name: str) -> str:
    row = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = 'casebase' AND t.relname = %s AND c.conname = %s AND c.contype = 'c'",
        (table, name),
    ).fetchone()
    assert row is not None, f"no CHECK constraint {name} on casebase.{table}"
    return row[0]


def test_status_enum_is_the_status_tuple_strongest_first() -> None:
    assert STATUSES == ("present", "uncertain", "absent")
    assert [s.value for s in Status] == list(STATUSES)
    assert all(type(s) is str for s in STATUSES), "plain strings for JSON schemas and SQL"


def test_check_constraints_list_the_enum_values(db_url: str) -> None:
    with connect(db_url) as conn:
        sex = _check(conn, "study", "ck_study_sex")
        status = _check(conn, "finding", "ck_finding_status")
        age = _check(conn, "study", "ck_study_age")
    assert sorted(_literals(sex)) == sorted(s.value for s in Sex), sex
    assert _literals(status) == list(STATUSES), status
    bounds = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", age)]
    assert bounds == [0.0, MAX_AGE_YEARS], age


def test_check_constraints_accept_each_value_and_refuse_another(db_url: str) -> None:
    """The constraints as PostgreSQL enforces them, not only as they read."""
    with connect(db_url) as conn:
        conn.execute(
            "INSERT INTO casebase.ingest_batch (name, source) VALUES ('vocab', 'test') "
            "ON CONFLICT DO NOTHING"
        )
        for i, sex in enumerate([*Sex, None]):
            conn.execute(
                "INSERT INTO casebase.study (study_id, modality, sex, batch, content_sha256) "
                "VALUES (%s, 'CXR', %s, 'vocab', '')",
                (f"VOCAB-{i}", None if sex is None else sex.value),
            )
        pk = conn.execute("SELECT study_pk FROM casebase.study WHERE study_id = 'VOCAB-0'")
        study_pk = pk.fetchone()[0]
        for status in Status:
            conn.execute(
                "INSERT INTO casebase.finding (study_pk, finding, status, backend, version) "
                "VALUES (%s, %s, %s, 'test', '1')",
                (study_pk, f"f_{status.value}", status.value),
            )
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(
                "INSERT INTO casebase.study (study_id, modality, sex, batch, content_sha256) "
                "VALUES ('VOCAB-X', 'CXR', 'U', 'vocab', '')"
            )
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(
                "INSERT INTO casebase.finding (study_pk, finding, status, backend, version) "
                "VALUES (%s, 'f_bad', 'possible', 'test', '1')",
                (study_pk,),
            )
        conn.rollback()


def test_every_sql_sex_check_lists_the_enum(db_url: str) -> None:
    with connect(db_url) as conn:
        rows = conn.execute(
            "SELECT p.proname, p.prosrc FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'casebase' AND p.prosrc LIKE '%%sex NOT IN%%'"
        ).fetchall()
    assert rows, "no SQL function checks sex any more: drop this test or find the check"
    for name, source in rows:
        listed = re.search(r"sex NOT IN \(([^)]*)\)", source)
        assert listed is not None, name
        assert sorted(_literals(listed.group(1))) == sorted(s.value for s in Sex), name


def test_search_function_accepts_each_sex_and_refuses_another(db_url: str) -> None:
    with connect(db_url) as conn:
        space = spaces.ensure_space(conn, name="vocab2", model_name="test", dim=2)
        spaces.ensure_partition(conn, space, Modality.CXR.value)
        conn.commit()
        call = (
            "SELECT count(*) FROM casebase.similar_to_vector("
            "'[1,0]'::vector, k => 5, modality => 'CXR', space => 'vocab2', sex => %s)"
        )
        for sex in Sex:
            assert conn.execute(call, (sex.value,)).fetchone()[0] == 0
        with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(call, ("U",))
        conn.rollback()
    with pytest.raises(QueryError) as python_info:
        Filters(sex="U")
    # the same rule, and the same words, on both sides
    assert str(python_info.value).split(",")[0] in str(info.value), (info.value, python_info.value)
    for sex in Sex:
        assert Filters(sex=sex.value).sex == sex.value


def test_partition_function_takes_the_modality_code_pattern(db_url: str) -> None:
    """ensure_embedding_partition checks modality codes with its own regex: every
    Modality is a code, and codes the Python pattern refuses it refuses too."""
    with connect(db_url) as conn:
        (source,) = conn.execute(
            "SELECT prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'casebase' AND p.proname = 'ensure_embedding_partition'"
        ).fetchone()
        assert f"!~ '{MODALITY_CODE_PATTERN.pattern}'" in source, source
        space = spaces.ensure_space(conn, name="vocab8", model_name="test", dim=8)
        for modality in Modality:
            assert MODALITY_CODE_PATTERN.match(modality.value)
            spaces.ensure_partition(conn, space, modality.value)
        conn.commit()
        assert sorted(m for m, _ in spaces.leaf_partitions(conn, space)) == sorted(Modality)
        for bad in ("cxr", "C-XR", "X" * 17, ""):
            assert not MODALITY_CODE_PATTERN.match(bad)
            with pytest.raises(psycopg.errors.InvalidParameterValue), conn.transaction():
                conn.execute(
                    "SELECT casebase.ensure_embedding_partition(%s::smallint, %s)",
                    (space.space_id, bad),
                )
            with pytest.raises(QueryError):
                Filters(modality=bad or "?")


def test_flag_pattern_is_the_filter_rule() -> None:
    assert FLAG_PATTERN.match("burned_in_text")
    for bad in ("Portable", "burned-in", "1x", "a" * 65):
        assert not FLAG_PATTERN.match(bad)
        with pytest.raises(QueryError):
            Filters(exclude_flags=(bad,))
