"""The schema check without Alembic: the head read from the revision files is Alembic's,
and a database that is behind (or has no schema) is still refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from casebase.db import migrate
from casebase.db.connection import connect
from casebase.errors import SchemaError
from tests.conftest import drop_database, make_database


def test_head_is_alembics_head():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    assert migrate.head_revision() == script.get_current_head()


def _revision_file(folder: Path, rev: str, down: str | tuple[str, ...] | None) -> None:
    (folder / f"{rev}_x.py").write_text(
        f'"""x\n\nRevision ID: {rev}\n"""\n\n'
        f"revision: str = {rev!r}\n"
        f"down_revision: str | tuple[str, ...] | None = {down!r}\n"
        "branch_labels = None\n"
    )


def test_head_of_a_merge_and_of_two_heads(tmp_path):
    _revision_file(tmp_path, "a1", None)
    _revision_file(tmp_path, "b2", "a1")
    _revision_file(tmp_path, "c3", "a1")
    with pytest.raises(SchemaError, match=r"2 heads \(\['b2', 'c3'\]\)"):
        migrate.head_revision(tmp_path)
    merged = tmp_path / "m"
    merged.mkdir()
    for f in tmp_path.glob("*.py"):
        (merged / f.name).write_text(f.read_text())
    _revision_file(merged, "d4", ("b2", "c3"))
    assert migrate.head_revision(merged) == "d4"


def test_a_database_behind_the_code_is_refused(server_url):
    url = make_database(server_url, "t_behind", migrate=False)
    try:
        migrate.upgrade(url, "0005")
        with connect(url) as conn, pytest.raises(SchemaError) as err:
            migrate.ensure_current(conn)
        assert str(err.value) == (
            f"the database schema is at revision 0005, this casebase needs "
            f"{migrate.head_revision()}: run `casebase db upgrade`"
        )
    finally:
        drop_database(server_url, "t_behind")


def test_the_schema_check_does_not_import_alembic():
    code = (
        "import sys; from casebase.db import migrate; migrate.head_revision(); "
        "print(sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out
