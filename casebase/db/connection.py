"""Connections: where the URL comes from, and the checks every connection passes.

pgvector's types are registered here and nowhere else (``configure``). Every connection
is a :class:`casebase.db.lost.Connection`: a server that stops under it is a one-line
:class:`~casebase.errors.DatabaseError`, not a psycopg traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from casebase.config import Settings, load_settings
from casebase.errors import DatabaseError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 150000
MIN_PGVECTOR = (0, 8, 0)


def scalar(
    conn: Connection, query: str, params: Sequence[object] | Mapping[str, object] = ()
) -> Any:
    """The first column of the one row ``query`` returns (a count, SHOW, a function call).

    A query of this kind always returns a row; if it does not, that is a broken server or
    schema, said in one line rather than a ``TypeError`` on ``None[0]``."""
    row = conn.execute(query, params or None).fetchone()
    if row is None:
        raise DatabaseError(f"the database returned no row for: {' '.join(query.split())[:80]}")
    return row[0]


def database_url(settings: Settings | None = None, *, start: bool = True) -> str:
    """The configured URL, or the embedded server's: started on demand, or with
    ``start=False`` an error when it is not running (``casebase db url``)."""
    settings = settings or load_settings()
    if settings.database_url:
        return _normalise(settings.database_url)
    from casebase.db import embedded

    if not start:
        current = embedded.status(settings.embedded_dir)
        if not current.url:
            raise DatabaseError(
                f"the embedded server ({settings.embedded_dir}) is not running: "
                "run `casebase db start` (or `casebase db url --start`)"
            )
        return current.url
    return embedded.start(settings.embedded_dir)


def _normalise(url: str) -> str:
    """Accept SQLAlchemy-style URLs too (postgresql+psycopg://)."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def libpq_url(url: str) -> str:
    """``url`` as libpq's own tools take it (``pg_basebackup``): no ``+driver`` part."""
    return _normalise(url)


def sqlalchemy_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


def redact(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def configure(conn: Connection) -> None:
    """Register pgvector's types on a psycopg connection (when the extension exists)."""
    from pgvector.psycopg import register_vector

    try:
        register_vector(conn)
    except Exception as exc:  # psycopg.ProgrammingError: vector type not found
        log.debug("pgvector types not registered: %s", exc)


def connect(
    url: str | None = None, *, autocommit: bool = False, register: bool = True, timeout: int = 10
):
    """Open a psycopg connection with a one-line error when the server is not reachable
    (after ``timeout`` seconds), and one later if the server goes away under it
    (``lost.py``)."""
    import psycopg

    from casebase.db.lost import open_connection

    url = _normalise(url) if url else database_url()
    try:
        conn = open_connection(url, autocommit=autocommit, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = "; ".join(lines)[:300] or type(exc).__name__
        raise DatabaseError(
            f"cannot connect to {redact(url)}: {reason}. Check DATABASE_URL "
            "(or unset it to use the embedded server)"
        ) from exc
    if register:
        configure(conn)
    return conn


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_server(
    conn: Connection, *, extension: str = "vector", min_version: tuple[int, ...] = MIN_PGVECTOR
):
    """Refuse servers that are too old or lack the extension, saying how to fix it."""
    number = scalar(conn, "SHOW server_version_num")
    if int(number) < MIN_SERVER_VERSION:
        raise DatabaseError(
            f"PostgreSQL {int(number) // 10000} is too old: casebase needs PostgreSQL >= 15"
        )
    row = conn.execute(
        "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = %s",
        (extension,),
    ).fetchone()
    wanted = ".".join(map(str, min_version))
    if row is None:
        raise DatabaseError(
            f"the server has no {extension} extension: install pgvector >= {wanted} "
            "(e.g. the pgvector/pgvector Docker image) or unset DATABASE_URL for the embedded one"
        )
    available = row[1] or row[0]
    if _version_tuple(available) < tuple(min_version):
        raise DatabaseError(
            f"{extension} {available} is too old: casebase needs pgvector >= {wanted} "
            f"(iterative index scans); upgrade it and run ALTER EXTENSION {extension} UPDATE"
        )


@lru_cache(maxsize=8)
def _checked(url: str) -> bool:
    with connect(url, autocommit=True, register=False) as conn:
        check_server(conn)
    return True


def checked_url(settings: Settings | None = None) -> str:
    """The database URL after the server passed its checks (once per process)."""
    url = database_url(settings)
    _checked(url)
    return url
