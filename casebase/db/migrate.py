"""Running Alembic from code, and checking a database is at the code's revision.

Alembic (and SQLAlchemy under it) is imported only to migrate: every command checks
the schema revision, and importing Alembic to learn the head revision cost ~0.3 s.

Migrations of one database run one at a time: :func:`upgrade` and :func:`downgrade` hold
an advisory lock (:data:`MIGRATION_LOCK_KEY`, per database) while Alembic runs, so two
``casebase db upgrade`` started together do not both create the schema (the second died
on a duplicate key); the second waits, then finds the schema current and does nothing.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.errors import DatabaseError, SchemaError

if TYPE_CHECKING:
    from psycopg import Connection

#: The advisory lock key of migrations (advisory locks are per database): "casebase" in
#: ASCII. Ingest's batch locks are hashes, so they do not meet it.
MIGRATION_LOCK_KEY = int.from_bytes(b"casebase", "big")

_REVISION = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.M)


def migrations_dir() -> Path:
    return Path(str(files("casebase.db"))) / "migrations"


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    return cfg


def _revision_ids(path: Path) -> tuple[str, tuple[str, ...]]:
    """``revision`` and ``down_revision`` of one revision file: module-level literals
    (one line each, as Alembic's template writes them)."""
    found = dict(_REVISION.findall(path.read_text(encoding="utf-8")))
    try:
        revision = ast.literal_eval(found["revision"])
        down = ast.literal_eval(found.get("down_revision", "None"))
    except (KeyError, ValueError, SyntaxError) as exc:
        raise SchemaError(f"cannot read the revision ids of {path}: {exc!r}") from exc
    downs = () if down is None else (down,) if isinstance(down, str) else tuple(down)
    return revision, downs


@lru_cache(maxsize=4)
def head_revision(versions: Path | None = None) -> str:
    """The code's newest revision: the one no other revision revises. Read from the
    revision files (``versions``: default, casebase's own) without Alembic;
    ``tests/test_revision.py`` checks it is the head Alembic finds."""
    revises: dict[str, tuple[str, ...]] = {}
    for path in sorted((versions or migrations_dir() / "versions").glob("*.py")):
        if path.name.startswith("_"):
            continue
        revision, downs = _revision_ids(path)
        revises[revision] = downs
    heads = set(revises) - {down for downs in revises.values() for down in downs}
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads ({sorted(heads)}), not one")
    return heads.pop()


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    _run(command.upgrade, url, revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    _run(command.downgrade, url, revision)


def _run(fn, url: str, revision: str) -> None:
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from casebase.db.connection import connect

    try:
        # A session lock on a connection of its own, held until Alembic is done (closing
        # the connection frees it, also when this process is killed).
        with connect(url, autocommit=True, register=False) as lock:
            lock.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            fn(alembic_config(url), revision)
    except CommandError as exc:
        raise SchemaError(f"migration to {revision!r} failed: {exc}") from exc
    except SQLAlchemyError as exc:
        from casebase.db.lost import is_lost, lost_error

        orig = getattr(exc, "orig", None)
        if orig is not None and is_lost(orig):
            raise lost_error(orig) from exc
        reason = str(orig or exc).strip().splitlines()[0]
        raise DatabaseError(f"migration to {revision!r} failed: {reason}") from exc


def current_revision(conn: Connection) -> str | None:
    from casebase.db.connection import scalar

    exists = scalar(conn, "SELECT to_regclass('public.alembic_version')")
    if exists is None:
        return None
    row = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return row[0] if row else None


def ensure_current(conn: Connection) -> None:
    """Refuse to work on a schema that is missing or behind, saying how to fix it."""
    current = current_revision(conn)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError("the database has no casebase schema: run `casebase db upgrade`")
    raise SchemaError(
        f"the database schema is at revision {current}, this casebase needs {head}: "
        "run `casebase db upgrade`"
    )


def database_revision(url: str) -> str | None:
    """The revision of the database at ``url`` (None: no casebase schema)."""
    from casebase.db.connection import connect

    with connect(url, autocommit=True) as conn:
        return current_revision(conn)
