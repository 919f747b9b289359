"""A lost database connection, translated where every connection is made.

Why: when the server is stopped or crashes under a running command, psycopg raises
``AdminShutdown`` ("terminating connection due to administrator command"), or an
``OperationalError`` ("server closed the connection unexpectedly", "the connection is
closed"), from whichever statement runs next, deep inside an ingest, a search or a
brief. Nothing there can recover (the connection is gone), and the CLI turns only
:class:`~casebase.errors.CasebaseError` into a one-line message, so users saw a traceback.

Every connection casebase opens (:func:`casebase.db.connection.connect`) is a
:class:`Connection`: its statements, COPYs, transactions, commits and rollbacks turn
such an error into one :class:`~casebase.errors.DatabaseError` that says what to run,
``from`` the original. Any other error (a constraint, a cancelled statement, a syntax
error) passes through unchanged, so callers can still catch it by its psycopg type.

One more error is translated here for the same reason: a write sent to a read-only
server (a hot standby, ``replication.py``) fails with ``ReadOnlySqlTransaction`` at
whichever statement writes first; it becomes a one-line :class:`ReadOnlyError` that says
where writes go.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from casebase.errors import DatabaseError, ReadOnlyError

LOST = (
    "the database server closed the connection (it was stopped or crashed): run "
    "`casebase db start` (or start your server), then re-run the command; a batch resumes "
    "where it stopped"
)
#: What casebase writes, and where a write sent to a standby should go instead.
WRITES = "ingest, db upgrade, spaces, train, reembed and relabel write"
WHERE_WRITES_GO = (
    "point DATABASE_URL at the primary (reads may use the standby through CASEBASE_READ_URL)"
)
# admin_shutdown, crash_shutdown, cannot_connect_now; class 08 is "connection exception"
_SHUTDOWN = frozenset({"57P01", "57P02", "57P03"})


def is_lost(exc: BaseException | None, conn: psycopg.Connection | None = None) -> bool:
    """Whether ``exc`` means the connection is gone (not that a statement failed)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate or ""
    return state in _SHUTDOWN or state.startswith("08") or bool(conn is not None and conn.broken)


def lost_error(exc: BaseException) -> DatabaseError:
    """The one-line error for a lost connection, naming what psycopg said."""
    reason = " ".join(str(exc).split())[:200] or "no reason given"
    return DatabaseError(f"{LOST} ({type(exc).__name__}: {reason})")


def read_only_error(conn: psycopg.Connection | None, reason: str = "") -> ReadOnlyError:
    """The one-line error for a write refused by a read-only server: a standby (the
    ``in_hot_standby`` parameter it reports), else a read-only role or database."""
    detail = f" ({reason})" if reason else ""
    if conn is None or conn.info.parameter_status("in_hot_standby") != "off":
        return ReadOnlyError(
            f"this server is a read-only standby{detail}: casebase {WRITES} to the primary; "
            + WHERE_WRITES_GO
        )
    return ReadOnlyError(
        f"this connection is read-only{detail} (default_transaction_read_only is on for "
        "this role or database): write with a role that may write (casebase_ingest)"
    )


@contextmanager
def translated(conn: psycopg.Connection) -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:
        if is_lost(exc, conn):
            raise lost_error(exc) from exc
        raise
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        reason = " ".join(str(exc).split())[:200]
        raise read_only_error(conn, reason) from exc


class Cursor(psycopg.Cursor):
    """A client-side cursor whose round trips translate a lost connection. (Fetching
    reads rows already received, so only the calls that talk to the server need it.)"""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        with translated(self.connection):
            return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        with translated(self.connection):
            super().executemany(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with translated(self.connection):
            yield from super().stream(*args, **kwargs)

    @contextmanager
    def copy(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with translated(self.connection), super().copy(*args, **kwargs) as copy:
            yield copy


class Connection(psycopg.Connection):
    """A psycopg connection whose cursors are :class:`Cursor` and whose transaction
    ends translate a lost connection (``connect`` opens one with ``cursor_factory``)."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        with translated(self):  # on a lost connection: "the connection is closed"
            return super().cursor(*args, **kwargs)

    def commit(self) -> None:
        with translated(self):
            super().commit()

    def rollback(self) -> None:
        with translated(self):
            super().rollback()

    @contextmanager
    def transaction(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with translated(self), super().transaction(*args, **kwargs) as tx:
            yield tx


def open_connection(url: str, **kwargs: Any) -> Connection:
    return Connection.connect(url, cursor_factory=Cursor, **kwargs)
