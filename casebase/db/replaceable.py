"""SQL functions and views as replaceable objects: one file per object per revision.

This is Alembic's "Replaceable Objects" cookbook recipe, kept in files so that psql
can run each one too. ``casebase/db/sql/<object>/<revision>.sql`` is the object
``casebase.<object>`` as revision ``<revision>`` left it; a file exists only for the
revisions that changed the object. Each file makes its object whole, whenever it is
run: one ``CREATE OR REPLACE FUNCTION`` or ``CREATE OR REPLACE VIEW`` followed by the
object's own ``REVOKE``/``GRANT`` lines, so a re-created object is privileged exactly
like a fresh one.

A migration names objects and revisions; it never cuts text out of a file::

    def upgrade():
        replaceable.install("similar_to_vector", "0006")

    def downgrade():
        replaceable.reinstall_previous("similar_to_vector", before="0006")

To change an object in a new revision, copy its newest file to
``sql/<object>/<new revision>.sql``, edit the copy, and call these two. Never edit an
older file again: databases downgrade to it, and tests/test_sql_objects.py checks
every revision against its files.

DDL that is not a replaceable object (the extension, the schema, tables, columns,
indexes created once, the composite type ``similar_case``, roles, schema-wide
grants, setting rows) stays in the migration's Python through ``op``: it runs once,
and its undo sits right beside it in ``downgrade()``, where a reader checks the two
halves against each other. ``sql/`` holds objects only, which lets a test check that
every file there is installed at head, exactly.

Revision ids are zero-padded numbers, so their string order is the chain's order
(tests/test_sql_objects.py checks that).
"""

from __future__ import annotations

import logging
import re
from importlib.resources import files
from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

SCHEMA = "casebase"

_CREATE = re.compile(
    r"^CREATE OR REPLACE (?P<kind>FUNCTION|VIEW) " + SCHEMA + r"\.(?P<name>\w+)\b", re.M
)


class ObjectFileError(LookupError):
    """An object or one of its versions has no file, or a file is not one whole object."""


def _root() -> Traversable:
    return files("casebase.db").joinpath("sql")


def object_names() -> list[str]:
    """Every object that has at least one file, sorted."""
    return sorted(d.name for d in _root().iterdir() if d.is_dir() and _revisions_in(d))


def _revisions_in(directory: Traversable) -> list[str]:
    return sorted(
        f.name.removesuffix(".sql")
        for f in directory.iterdir()
        if f.is_file() and f.name.endswith(".sql")
    )


def revisions(name: str) -> list[str]:
    """The revisions that changed ``name``, oldest first."""
    found = _revisions_in(_root().joinpath(name)) if _root().joinpath(name).is_dir() else []
    if not found:
        raise ObjectFileError(f"no SQL object {name!r} under casebase/db/sql/")
    return found


def read(name: str, revision: str) -> str:
    """The text of ``name`` as of ``revision`` (which must have changed it)."""
    if revision not in revisions(name):
        raise ObjectFileError(
            f"SQL object {name!r} has no file for revision {revision}: it has {revisions(name)}"
        )
    return _root().joinpath(name, f"{revision}.sql").read_text(encoding="utf-8")


def kind(name: str, revision: str | None = None) -> str:
    """``FUNCTION`` or ``VIEW``: what the file (the newest one by default) creates.

    A file must create exactly one object, the one its directory names."""
    revision = revision or revisions(name)[-1]
    found = [(m["kind"], m["name"]) for m in _CREATE.finditer(read(name, revision))]
    if len(found) != 1 or found[0][1] != name:
        raise ObjectFileError(
            f"sql/{name}/{revision}.sql must create one object, {SCHEMA}.{name}, with "
            f"CREATE OR REPLACE FUNCTION|VIEW; it creates {found or 'nothing'}"
        )
    return found[0][0]


def version_at(name: str, revision: str) -> str | None:
    """The version of ``name`` live at ``revision``: the newest file at or before it."""
    earlier = [r for r in revisions(name) if r <= revision]
    return earlier[-1] if earlier else None


def version_before(name: str, revision: str) -> str | None:
    """The version of ``name`` that was live before ``revision`` ran (None: none was)."""
    earlier = [r for r in revisions(name) if r < revision]
    return earlier[-1] if earlier else None


def live_at(revision: str) -> dict[str, str]:
    """Every object live at ``revision``, with the revision of its version."""
    found = {name: version_at(name, revision) for name in object_names()}
    return {name: version for name, version in found.items() if version is not None}


# ---------------------------------------------------------------- inside a migration


def _execute(sql: str) -> None:
    from alembic import op

    op.execute(sql)


def install(name: str, revision: str, *, drop_first: bool = False) -> None:
    """Create or replace ``name`` as of ``revision``, with its privileges.

    ``drop_first`` drops the live version before: PostgreSQL replaces a view in place
    only when the new one keeps every column, in order."""
    text = read(name, revision)
    if drop_first:
        drop(name)
    log.info("installing %s.%s as of revision %s", SCHEMA, name, revision)
    _execute(text)


def reinstall_previous(name: str, *, before: str, drop_first: bool = False) -> str | None:
    """Put back the version of ``name`` that was live before revision ``before``; drop
    the object when it did not exist yet. Returns the revision put back (or None)."""
    previous = version_before(name, before)
    if previous is None:
        drop(name)
        return None
    install(name, previous, drop_first=drop_first)
    return previous


def drop(name: str) -> None:
    """Drop ``name`` (no CASCADE: a dependent object makes this fail, loudly)."""
    log.info("dropping %s.%s", SCHEMA, name)
    _execute(f"DROP {kind(name)} {SCHEMA}.{name}")
