"""Streaming replication as casebase sees it: WAL positions, replay waits, read-only servers.

Why: a hot standby answers reads a little behind its primary (replication is
asynchronous). Where a caller needs to read what it just wrote (a search right after an
ingest), it asks the primary for its WAL position after the commit and waits until the
standby has *replayed* up to it (``pg_last_wal_replay_lsn()``, not merely received it);
a standby that does not get there in time is one :class:`ReplicaLagError` naming the lag.

A write sent to a standby fails in PostgreSQL with ``ReadOnlySqlTransaction``; casebase
says instead, in one line, that the server is a read-only standby and where writes go.
Whether a connection is a standby is read from the ``in_hot_standby`` parameter the
server reports (PostgreSQL >= 14) with every connection, so asking costs no round trip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from casebase.db.connection import redact, scalar
from casebase.db.lost import WHERE_WRITES_GO
from casebase.errors import ReadOnlyError, ReplicaLagError

if TYPE_CHECKING:
    from psycopg import Connection


def is_standby(conn: Connection) -> bool:
    """Whether ``conn``'s server is a hot standby (in recovery), from what it reported."""
    reported = conn.info.parameter_status("in_hot_standby")
    if reported is not None:
        return reported == "on"
    return bool(scalar(conn, "SELECT pg_is_in_recovery()"))  # PostgreSQL < 14


def require_primary(conn: Connection, what: str = "this command") -> None:
    """Refuse, before any work, to write through ``conn`` when it is a standby."""
    if is_standby(conn):
        where = conn.info.host or "?"
        raise ReadOnlyError(
            f"this server is a read-only standby (socket/host {where}): {what} writes, "
            f"so it must run on the primary; {WHERE_WRITES_GO}"
        )


def require_primary_url(url: str, what: str = "this command") -> None:
    """:func:`require_primary` on a connection of its own to ``url``."""
    from casebase.db.connection import connect

    with connect(url, autocommit=True, register=False) as conn:
        require_primary(conn, what)


def current_lsn(conn: Connection) -> str:
    """The primary's WAL position now: every transaction committed before this call ends
    at or before it. (On a standby: its replay position, the most it can serve.)"""
    return str(
        scalar(
            conn,
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_lsn() END",
        )
    )


@dataclass(frozen=True)
class Replay:
    """Where a standby stands against a WAL position."""

    target_lsn: str
    replay_lsn: str | None
    behind_bytes: int  # 0 once replayed
    receiver: str | None  # pg_stat_wal_receiver.status: "streaming", ... None: no receiver
    seconds: float = 0.0  # how long the wait took


def replay_position(conn: Connection, target_lsn: str) -> Replay:
    """One look at how far the standby of ``conn`` has replayed, against ``target_lsn``."""
    row = conn.execute(
        "SELECT pg_last_wal_replay_lsn()::text, "
        "greatest(0, coalesce(pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()), -1)), "
        "(SELECT status FROM pg_stat_wal_receiver LIMIT 1)",
        (target_lsn,),
    ).fetchone()
    conn.commit()  # no snapshot held between looks
    assert row is not None
    replay, behind, receiver = row
    behind = int(behind) if replay is not None else -1
    return Replay(target_lsn, replay, behind, receiver)


def wait_for_replay(
    conn: Connection, target_lsn: str, *, timeout: float = 30.0, url: str | None = None
) -> Replay:
    """Wait until the standby of ``conn`` has replayed the WAL up to ``target_lsn``.

    Polls (from 1 ms, doubling to 100 ms): replay after a commit usually takes
    milliseconds. Raises :class:`ReplicaLagError` after ``timeout`` seconds, naming how
    far behind the standby is and whether it is receiving WAL at all.
    """
    start = time.monotonic()
    pause = 0.001
    while True:
        seen = replay_position(conn, target_lsn)
        elapsed = time.monotonic() - start
        if seen.behind_bytes == 0:
            return Replay(seen.target_lsn, seen.replay_lsn, 0, seen.receiver, elapsed)
        if elapsed >= timeout:
            where = redact(url) if url else (conn.info.host or "the standby")
            receiving = (
                "its WAL receiver is streaming"
                if seen.receiver == "streaming"
                else f"its WAL receiver is {seen.receiver or 'not running'} (is the primary "
                "reachable from it? see its log)"
            )
            behind = "unknown" if seen.behind_bytes < 0 else f"{seen.behind_bytes:,} bytes"
            raise ReplicaLagError(
                f"the standby {where} has not replayed the primary's WAL up to {target_lsn} "
                f"after {timeout:g} s: it is at {seen.replay_lsn or 'nothing yet'}, "
                f"{behind} behind; {receiving}. Check `casebase db replica list`, "
                "or wait longer (timeout=...)"
            )
        time.sleep(min(pause, max(0.0, timeout - elapsed)))
        pause = min(0.1, pause * 2)
