"""The schema from Alembic: views, partitions with HNSW, roles, round trips."""

from __future__ import annotations

import psycopg
import pytest

from casebase.db import migrate, spaces
from casebase.db.connection import connect
from tests.conftest import drop_database, make_database

VIEWS = {"studies", "images", "findings", "batches", "rejects", "spaces", "embeddings"}


def test_views_exist(db_url):
    with connect(db_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'casebase'"
        ).fetchall()
    assert VIEWS <= {r[0] for r in rows}, rows


def _leaf_indexes(conn, table: str) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'casebase' "
            "AND tablename = %s",
            (table,),
        ).fetchall()
    )


def test_every_leaf_partition_has_an_hnsw_index(db_url):
    with connect(db_url) as conn:
        space = spaces.ensure_space(conn, name="s8", model_name="test", dim=8)
        for modality in ("CXR", "KXR", "CT"):
            spaces.ensure_partition(conn, space, modality)
        leaves = spaces.leaf_partitions(conn, space)
        assert [m for m, _ in leaves] == ["CT", "CXR", "KXR"]
        for _, table in leaves:
            defs = list(_leaf_indexes(conn, table).values())
            hnsw = [d for d in defs if "USING hnsw" in d]
            assert len(hnsw) == 1 and "vector(8)" in hnsw[0] and "vector_cosine_ops" in hnsw[0], (
                defs
            )
            assert "m='32'" in hnsw[0] and "ef_construction='128'" in hnsw[0], hnsw[0]
        conn.commit()


def test_hnsw_parameters_are_settings(db_url):
    """New leaves and rebuilt indexes take m / ef_construction from casebase.setting."""
    with connect(db_url) as conn:
        space = spaces.ensure_space(conn, name="s4", model_name="test", dim=4)
        conn.execute("UPDATE casebase.setting SET value = '12' WHERE key = 'hnsw_m'")
        spaces.ensure_partition(conn, space, "CXR")
        assert spaces.hnsw_params(conn) == (12, 128)
        spaces.drop_vector_index(conn, space, "CXR")
        spaces.create_vector_index(conn, space, "CXR", ef_construction=40)
        (indexdef,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'casebase' AND indexname = %s",
            (f"embedding_s{space.space_id}_cxr_hnsw",),
        ).fetchone()
        assert "m='12'" in indexdef and "ef_construction='40'" in indexdef, indexdef
        conn.rollback()


def test_revision_0006_gives_existing_and_new_leaves_a_covering_filter_index(server_url):
    """The exact route filters with an index-only scan: every filter column is in it.
    Revision 0010 replaces it with <leaf>_cover, which also carries vec_half."""
    url = make_database(server_url, "t_filter_index", migrate=False)
    try:
        migrate.upgrade(url, "0005")
        with connect(url) as conn:
            space = spaces.ensure_space(conn, name="s4", model_name="test", dim=4)
            old_leaf = spaces.ensure_partition(conn, space, "CXR")
            conn.commit()
        migrate.upgrade(url, "0007")
        with connect(url) as conn:
            new_leaf = spaces.ensure_partition(conn, space, "KXR")
            conn.commit()
            for leaf in (old_leaf, new_leaf):
                indexes = _leaf_indexes(conn, leaf)
                assert f"{leaf}_sex_age" not in indexes, indexes
                covering = indexes[f"{leaf}_filters"]
                assert (
                    "(sex, age) INCLUDE (view, flags, study_date, batch, patient_key, "
                    "study_id, study_pk, image_pk)" in covering
                ), covering
        migrate.upgrade(url)
        with connect(url) as conn:
            third_leaf = spaces.ensure_partition(conn, space, "MR")
            conn.commit()
            for leaf in (old_leaf, new_leaf, third_leaf):
                indexes = _leaf_indexes(conn, leaf)
                assert f"{leaf}_filters" not in indexes, indexes
                assert (
                    "(sex, flag_mask, view, age) INCLUDE (flags, study_date, batch, patient_key, "
                    "study_id, study_pk, image_pk, vec_half)" in indexes[f"{leaf}_cover"]
                ), indexes
        migrate.downgrade(url, "0005")
        with connect(url) as conn:
            indexes = _leaf_indexes(conn, old_leaf)
            assert f"{old_leaf}_sex_age" in indexes and f"{old_leaf}_filters" not in indexes
            assert f"{old_leaf}_cover" not in indexes, indexes
    finally:
        drop_database(server_url, "t_filter_index")


def test_partition_rejects_wrong_dimension_and_bad_modality(db_url):
    with connect(db_url) as conn:
        space = spaces.ensure_space(conn, name="s4", model_name="test4", dim=4)
        spaces.ensure_partition(conn, space, "CXR")
        conn.commit()
        conn.execute("INSERT INTO casebase.ingest_batch (name, source) VALUES ('b', 'x')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO casebase.embedding (space_id, modality, image_pk, study_pk, study_id,"
                " batch, vec) VALUES (%s, 'CXR', 1, 1, 'S1', 'b', '[1,2,3]')",
                (space.space_id,),
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            spaces.ensure_partition(conn, space, "cxr'; DROP TABLE x; --")
        conn.rollback()


def test_space_with_other_model_under_same_name_is_refused(db_url):
    from casebase.errors import InputError

    with connect(db_url) as conn:
        spaces.ensure_space(conn, name="same", model_name="a", dim=4)
        with pytest.raises(InputError, match="already holds a"):
            spaces.ensure_space(conn, name="same", model_name="b", dim=4)
        conn.rollback()


def _as_role(conn, role: str, sql: str):
    conn.execute(f"SET ROLE {role}")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.rollback()


@pytest.mark.parametrize("table", ["report_raw", "attributes_raw", "report", "study", "finding"])
def test_analyst_cannot_read_tables(db_url, table):
    with connect(db_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_role(conn, "casebase_analyst", f"SELECT * FROM casebase.{table}")


def test_analyst_reads_views_but_cannot_write(cohort_url):
    """On the loaded cohort (60 chest + 20 knee studies, one image each): the analyst
    sees every row the owner sees, and there are rows to see."""
    expected = {"studies": 80, "images": 80, "embeddings": 80, "batches": 1, "spaces": 1}
    with connect(cohort_url) as conn:
        for view in sorted(VIEWS):
            sql = f"SELECT * FROM casebase.{view}"
            as_analyst = _as_role(conn, "casebase_analyst", sql)
            as_owner = conn.execute(sql).fetchall()
            assert len(as_analyst) == len(as_owner), (view, len(as_analyst), len(as_owner))
            if view in expected:
                assert len(as_analyst) == expected[view], (view, as_analyst[:3])
        findings = _as_role(conn, "casebase_analyst", "SELECT count(*) FROM casebase.findings")
        assert findings[0][0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as_role(
                conn,
                "casebase_analyst",
                "INSERT INTO casebase.ingest_batch (name, source) VALUES ('x', 'y')",
            )


def test_ingest_role_writes(db_url):
    with connect(db_url) as conn:
        conn.execute("SET ROLE casebase_ingest")
        conn.execute("INSERT INTO casebase.ingest_batch (name, source) VALUES ('r1', 'x')")
        n = conn.execute("SELECT count(*) FROM casebase.ingest_batch WHERE name = 'r1'")
        assert n.fetchone()[0] == 1
        conn.rollback()


def test_upgrade_downgrade_upgrade_and_alembic_check(server_url):
    from alembic import command

    url = make_database(server_url, "t_roundtrip", migrate=False)
    try:
        migrate.upgrade(url)
        migrate.downgrade(url, "base")
        with connect(url) as conn:
            assert conn.execute("SELECT to_regnamespace('casebase')").fetchone()[0] is None
        migrate.upgrade(url)
        command.check(migrate.alembic_config(url))  # raises if models and schema drift apart
        with connect(url) as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()
            salt = conn.execute(
                "SELECT value FROM casebase.setting WHERE key = 'patient_salt'"
            ).fetchone()[0]
            assert len(salt) == 64
    finally:
        drop_database(server_url, "t_roundtrip")


def test_missing_schema_is_a_clear_error(server_url):
    from casebase.errors import SchemaError

    url = make_database(server_url, "t_empty", migrate=False)
    try:
        with connect(url) as conn, pytest.raises(SchemaError, match="casebase db upgrade"):
            migrate.ensure_current(conn)
    finally:
        drop_database(server_url, "t_empty")


def test_tuned_settings_survive_a_downgrade_and_the_upgrade_after_it(server_url, caplog):
    """Downgrades leave setting rows; upgrades insert only the defaults that are missing."""
    import logging

    url = make_database(server_url, "t_settings")
    tuned = {"max_k": "500", "hnsw_m": "24"}
    try:
        with connect(url) as conn:
            for key, value in tuned.items():
                conn.execute("UPDATE casebase.setting SET value = %s WHERE key = %s", (value, key))
            conn.commit()
        migrate.downgrade(url, "0001")
        migrate.upgrade(url)
        with connect(url) as conn:
            rows = dict(
                conn.execute(
                    "SELECT key, value FROM casebase.setting WHERE key = ANY (%s)", (list(tuned),)
                ).fetchall()
            )
            assert rows == tuned
            # ... and the re-installed functions read them.
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="between 1 and 500"):
                conn.execute("SELECT * FROM casebase.similar_to_vector('[1,0,0,0]', k => 501)")
            conn.rollback()
            space = spaces.ensure_space(conn, name="s4", model_name="test", dim=4)
            leaf = spaces.ensure_partition(conn, space, "CXR")
            assert "m='24'" in _leaf_indexes(conn, leaf)[f"{leaf}_hnsw"]
            conn.commit()
            (salt,) = conn.execute(
                "SELECT value FROM casebase.setting WHERE key = 'patient_salt'"
            ).fetchone()
        # Down to base the rows must go: the log says which, without the patient salt.
        with caplog.at_level(logging.WARNING, logger="casebase.db.migrations"):
            migrate.downgrade(url, "base")
        assert "max_k=500" in caplog.text and "hnsw_m=24" in caplog.text, caplog.text
        assert "patient salt" in caplog.text and salt not in caplog.text, caplog.text
    finally:
        drop_database(server_url, "t_settings")


def test_models_and_the_migrated_schema_agree(db_url):
    """alembic's autogenerate comparison finds nothing to change, leaf partitions aside."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    from casebase.db.connection import sqlalchemy_url
    from casebase.db.models import LEAF_PARTITION, include_name, metadata

    with connect(db_url) as conn:
        space = spaces.ensure_space(conn, name="cmp", model_name="test", dim=4)
        leaf = spaces.ensure_partition(conn, space, "CXR")
        conn.commit()
    engine = create_engine(sqlalchemy_url(db_url), poolclass=pool.NullPool)
    opts = {"include_schemas": True, "compare_type": True, "target_metadata": metadata}
    try:
        with engine.connect() as sa_conn:
            diff = compare_metadata(
                MigrationContext.configure(sa_conn, opts={**opts, "include_name": include_name}),
                metadata,
            )
            unfiltered = compare_metadata(MigrationContext.configure(sa_conn, opts=opts), metadata)
    finally:
        engine.dispose()
    assert diff == [], diff
    # Without the filter the leaves made at run time would count as drift.
    removed = {d[1].name for d in unfiltered if d[0] == "remove_table"}
    assert leaf in removed and all(LEAF_PARTITION.match(n) for n in removed), removed
