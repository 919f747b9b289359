"""Where a client's reads go: its read server (a hot standby), else the primary.

Why: searches, briefs and eval only read, so they can run on standbys and leave the
primary to ingest; writes and migrations always go to the primary. A read server that
is down must not turn every search into a traceback: when the read URL cannot be
reached, or its connection is lost in the middle of a read, reads go to the primary and
*one* WARNING says so (not one per query); after ``retry_after`` seconds the next read
tries the read server again, and an INFO line says when reads are back on it.

With a libpq multi-host read URL (``host=/standby,/primary`` with
``target_session_attrs=prefer-standby``) libpq itself picks a live standby, else the
primary, when the connection opens; this fallback then only covers a connection lost
later.

Read-your-writes: :func:`casebase.db.replication.wait_for_replay`, through
:meth:`ReadRoute.wait_for` (``Client.wait_for_replica``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from casebase.db.connection import connect, redact
from casebase.db.replication import Replay, current_lsn, is_standby, wait_for_replay
from casebase.errors import DatabaseError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

RETRY_AFTER_S = 30.0
CONNECT_TIMEOUT_S = 5


class ReadRoute:
    """The connection reads use now. ``primary`` is the caller's, never closed here."""

    def __init__(
        self, primary: Connection, read_url: str | None, *, retry_after: float | None = None
    ) -> None:
        self.primary = primary
        self.read_url = read_url or None
        self.retry_after = RETRY_AFTER_S if retry_after is None else retry_after
        self._reader: Connection | None = None
        self._pin: Connection | None = None
        self._down_since: float | None = None  # None: up (or never tried)
        self._last_try = 0.0
        if self.read_url:
            self._open()

    @property
    def conn(self) -> Connection:
        """The read server's connection, or the primary's while it is unreachable."""
        if self._pin is not None:
            return self._pin
        if self.read_url is None:
            return self.primary
        if self._reader is None and time.monotonic() - self._last_try >= self.retry_after:
            self._open()
        return self._reader if self._reader is not None else self.primary

    @contextlib.contextmanager
    def pinned(self) -> Iterator[Connection]:
        """One connection for a whole read (several statements, then a commit), even if
        the read server comes back meanwhile; nested reads share the outer one's."""
        if self._pin is not None:
            yield self._pin
            return
        self._pin = self.conn
        try:
            yield self._pin
        finally:
            self._pin = None

    @property
    def on_read_server(self) -> bool:
        return self._reader is not None

    def _open(self) -> None:
        assert self.read_url is not None
        self._last_try = time.monotonic()
        try:
            self._reader = connect(self.read_url, timeout=CONNECT_TIMEOUT_S)
        except DatabaseError as exc:
            self._down(exc)
            return
        if self._down_since is not None:
            log.info(
                "the read server %s answers again after %.0f s: reads go there again",
                redact(self.read_url),
                time.monotonic() - self._down_since,
            )
        self._down_since = None

    def _down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            reason = " ".join(str(exc.__cause__ or exc).split())[:200]  # psycopg's words
            log.warning(
                "the read server %s cannot be reached (%s): reading from the primary; "
                "trying it again every %.0f s",
                redact(self.read_url or ""),
                reason,
                self.retry_after,
            )
        else:
            log.debug("the read server is still down: %s", exc)

    def failed_over(self, exc: BaseException) -> bool:
        """After a read raised ``exc``: if the read server's connection is what broke,
        switch reads to the primary and return True (the caller runs the read again)."""
        reader = self._reader
        if reader is None or not (reader.closed or reader.broken):
            return False
        with contextlib.suppress(Exception):
            reader.close()
        self._reader = self._pin = None
        self._last_try = time.monotonic()
        self._down(exc)
        return True

    def wait_for(self, min_lsn: str | None = None, *, timeout: float = 30.0) -> Replay:
        """Wait until reads see everything the primary committed up to ``min_lsn``
        (default: its WAL position now). Immediate when reads go to a primary."""
        lsn = min_lsn or current_lsn(self.primary)
        self.primary.commit()
        conn = self.conn
        if conn is self.primary or not is_standby(conn):
            return Replay(lsn, lsn, 0, None, 0.0)
        try:
            return wait_for_replay(conn, lsn, timeout=timeout, url=self.read_url)
        except DatabaseError as exc:
            if self.failed_over(exc):  # it went away meanwhile: the primary has it all
                return Replay(lsn, lsn, 0, None, 0.0)
            raise

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
