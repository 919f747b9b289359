"""Running Alembic from code, and checking a database is at the code's revision."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from casebase.errors import DatabaseError, SchemaError


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(str(files("casebase.db"))) / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    _run(command.upgrade, url, revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    _run(command.downgrade, url, revision)


def _run(fn, url: str, revision: str) -> None:
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        fn(alembic_config(url), revision)
    except CommandError as exc:
        raise SchemaError(f"migration to {revision!r} failed: {exc}") from exc
    except SQLAlchemyError as exc:
        from casebase.db.lost import is_lost, lost_error

        orig = getattr(exc, "orig", None)
        if is_lost(orig):
            raise lost_error(orig) from exc
        reason = str(orig or exc).strip().splitlines()[0]
        raise DatabaseError(f"migration to {revision!r} failed: {reason}") from exc


def current_revision(conn) -> str | None:
    exists = conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0]
    if exists is None:
        return None
    row = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return row[0] if row else None


def ensure_current(conn) -> None:
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
