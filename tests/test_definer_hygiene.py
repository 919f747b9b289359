"""SECURITY DEFINER hygiene (issue #12): every function of the schema is owned by the
NOLOGIN role casebase_owner, which holds only what the functions need, with pg_temp last
in its search_path, so an analyst's temp objects cannot shadow what the functions read."""

from __future__ import annotations

import psycopg

from casebase.db import migrate, spaces
from casebase.db.connection import connect
from casebase.db.models import LEAF_PARTITION
from tests.conftest import REPO, drop_database, make_database

OWNER = "casebase_owner"
SEARCH_PATH = "search_path=pg_catalog, casebase, public, pg_temp"


def _functions(conn) -> list[tuple]:
    return conn.execute(
        "SELECT p.proname, p.proowner::regrole::text, p.prosecdef, p.proconfig "
        "FROM pg_proc p WHERE p.pronamespace = 'casebase'::regnamespace ORDER BY 1"
    ).fetchall()


def test_every_function_is_owned_by_the_nologin_role_with_pg_temp_last(db_url):
    with connect(db_url) as conn:
        functions = _functions(conn)
        role = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
            "FROM pg_roles WHERE rolname = %s",
            (OWNER,),
        ).fetchone()
    assert role == (False, False, False, False, False), role
    definers = {f[0] for f in functions if f[2]}
    assert {"similar_to_vector", "similar_cases", "hybrid_search", "query_image"} <= definers
    assert {"similar_composed", "similar_cases_modified"} <= definers
    assert {"similar_reranked", "similar_cases_reranked"} <= definers
    assert {"_space", "_leaf", "ensure_embedding_partition"} <= definers
    offenders = [
        f for f in functions if f[1] != OWNER or not f[3] or not any(c == SEARCH_PATH for c in f[3])
    ]
    assert offenders == [], offenders


def test_the_owner_role_holds_only_what_the_functions_need(db_url):
    with connect(db_url) as conn:
        space = spaces.ensure_space(conn, name="own", model_name="test", dim=4)
        spaces.ensure_partition(conn, space, "CXR")
        conn.commit()
        tables = conn.execute(
            "SELECT c.relname, c.relowner::regrole::text, "
            "has_table_privilege(%s, c.oid, 'SELECT'), "
            "has_table_privilege(%s, c.oid, 'INSERT, UPDATE, DELETE') "
            "FROM pg_class c WHERE c.relnamespace = 'casebase'::regnamespace "
            "AND c.relkind IN ('r', 'p', 'v') ORDER BY 1",
            (OWNER, OWNER),
        ).fetchall()
    owned = {t[0] for t in tables if t[1] == OWNER}
    assert {"embedding", f"embedding_s{space.space_id}_cxr"} <= owned, tables
    assert all(t == "embedding" or LEAF_PARTITION.match(t) for t in owned), tables
    reads = {t[0] for t in tables if t[2]} - owned
    # image: the re-ranker finds a candidate's images by study (revision 0009);
    # prompt_embedding: the stored prompts of similar_cases_modified (0009).
    want = {"setting", "embedding_space", "study", "report", "image", "prompt_embedding"}
    assert reads == want, tables
    writes = {t[0] for t in tables if t[3]} - owned
    assert writes == set(), tables


def test_ingest_creates_partitions_through_the_owner(db_url):
    """ensure_embedding_partition runs as casebase_owner: an ingest login adds a leaf (the
    new table belongs to the owner) and writes into it through the parent table."""
    with connect(db_url) as conn:
        space = spaces.ensure_space(conn, name="ing", model_name="test", dim=4)
        conn.execute("INSERT INTO casebase.ingest_batch (name, source) VALUES ('ing', 'x')")
        conn.commit()
        conn.execute("SET ROLE casebase_ingest")
        leaf = spaces.ensure_partition(conn, space, "MR")
        conn.execute(
            "INSERT INTO casebase.embedding (space_id, modality, image_pk, study_pk, study_id, "
            "batch, vec) VALUES (%s, 'MR', 1, 1, 'S1', 'ing', '[1,0,0,0]')",
            (space.space_id,),
        )
        conn.execute("RESET ROLE")
        owner = conn.execute(
            "SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass",
            (f"casebase.{leaf}",),
        ).fetchone()[0]
        assert owner == OWNER
        assert conn.execute(f"SELECT count(*) FROM casebase.{leaf}").fetchone()[0] == 1
        conn.rollback()


SHADOWS = [
    "CREATE TEMP TABLE pg_inherits (inhrelid oid, inhparent oid, inhseqno int)",
    "CREATE TEMP TABLE pg_class (oid oid, relname name, relnamespace oid, relpartbound text,"
    " reltuples real)",
    "CREATE TEMP TABLE pg_namespace (oid oid, nspname name)",
    "CREATE TEMP TABLE embedding_space AS SELECT 99::smallint AS space_id, 'evil' AS name,"
    " 4 AS dim, true AS is_default",
    "CREATE TEMP TABLE setting (key text, value text)",
    "INSERT INTO setting VALUES ('max_k', '100000000'), ('exact_threshold', '0')",
    "CREATE TEMP TABLE study (study_pk bigint, study_id text, attributes jsonb)",
    "CREATE TEMP TABLE report (study_pk bigint, impression text, tsv tsvector)",
    "CREATE TEMP TABLE embedding (study_pk bigint, image_pk bigint, vec text)",
    "CREATE TEMP VIEW similar_case AS SELECT 1 AS rank",
    "CREATE FUNCTION pg_temp.vector_dims(vector) RETURNS integer LANGUAGE sql AS 'SELECT 4'",
    "CREATE FUNCTION pg_temp.array_to_string(text[], text) RETURNS text LANGUAGE sql"
    " AS 'SELECT ''true'''",
    "CREATE FUNCTION pg_temp.websearch_to_tsquery(regconfig, text) RETURNS tsquery"
    " LANGUAGE sql AS 'SELECT ''''::tsquery'",
]

QUERIES = [
    "SELECT study_id, distance, image_id FROM casebase.similar_cases('DEMO-C0007', k => 5,"
    " sex => 'F')",
    "SELECT study_id, distance FROM casebase.similar_to_vector((SELECT vec FROM"
    " casebase.embeddings WHERE study_id = 'DEMO-K0061'), k => 5, modality => 'KXR')",
    "SELECT study_id, sources, score FROM casebase.hybrid_search((SELECT vec FROM"
    " casebase.embeddings WHERE study_id = 'DEMO-C0003'), 'pleural effusion', k => 5,"
    " modality => 'CXR', exclude_flags => ARRAY['portable'])",
    "SELECT image_id, modality FROM casebase.query_image('DEMO-C0011')",
    # _leaf reads the catalogs: without a modality it lists the space's leaves.
    "SELECT study_id FROM casebase.similar_to_vector((SELECT vec FROM casebase.embeddings"
    " LIMIT 1), k => 5)",
    "SELECT study_id FROM casebase.similar_to_vector((SELECT vec FROM casebase.embeddings"
    " LIMIT 1), k => 5000, modality => 'CXR')",
]


def _answer(conn, sql: str):
    try:
        with conn.transaction():
            return conn.execute(sql).fetchall()
    except psycopg.Error as exc:
        return f"{exc.sqlstate}: {exc.diag.message_primary}"


def test_an_analysts_temp_objects_shadow_nothing(cohort_url):
    """As an analyst login: the same answers (rows and errors) before and after temp
    tables, a view and functions named like what the definer functions read."""
    with connect(cohort_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS t_shadow")
        admin.execute("CREATE ROLE t_shadow LOGIN IN ROLE casebase_analyst")
    try:
        with psycopg.connect(cohort_url.replace("postgres@", "t_shadow@")) as conn:
            before = [_answer(conn, sql) for sql in QUERIES]
            assert all(isinstance(a, list) and a for a in before[:4]), before
            assert "modality is required" in before[4] and "k must be between" in before[5]
            for sql in SHADOWS:
                conn.execute(sql)
            conn.commit()
            after = [_answer(conn, sql) for sql in QUERIES]
        changed = [(q, b, a) for q, b, a in zip(QUERIES, before, after, strict=True) if a != b]
        assert changed == [], changed
    finally:
        with connect(cohort_url, autocommit=True) as admin:
            admin.execute("DROP OWNED BY t_shadow")
            admin.execute("DROP ROLE t_shadow")


def test_downgrade_gives_the_functions_and_tables_back(server_url):
    url = make_database(server_url, "t_definer_down")
    try:
        with connect(url) as conn:
            space = spaces.ensure_space(conn, name="d", model_name="test", dim=4)
            spaces.ensure_partition(conn, space, "CXR")
            conn.commit()
        migrate.downgrade(url, "0006")
        with connect(url) as conn:
            schema_owner = conn.execute(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'casebase'"
            ).fetchone()[0]
            functions = _functions(conn)
            tables = conn.execute(
                "SELECT relname, relowner::regrole::text FROM pg_class "
                "WHERE relnamespace = 'casebase'::regnamespace AND relkind IN ('r', 'p')"
            ).fetchall()
            grants = conn.execute(
                "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a "
                "WHERE c.relnamespace = 'casebase'::regnamespace AND a.grantee = %s::regrole",
                (OWNER,),
            ).fetchone()[0]
        assert [f for f in functions if f[1] != schema_owner or "pg_temp" in str(f[3])] == []
        assert {f[0] for f in functions} >= {"similar_to_vector", "hybrid_search"}
        assert "query_image" not in {f[0] for f in functions}
        assert [t for t in tables if t[1] != schema_owner] == [], tables
        assert grants == 0
        migrate.upgrade(url)
        with connect(url) as conn:
            assert [f for f in _functions(conn) if f[1] != OWNER] == []
    finally:
        drop_database(server_url, "t_definer_down")


def test_the_readme_names_the_owner_role():
    roles = (REPO / "README.md").read_text().split("### Roles", 1)[1].split("###", 1)[0]
    assert OWNER in roles and "NOLOGIN" in roles and "pg_temp" in roles, roles
