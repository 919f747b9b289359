"""Committing chunks of prepared studies on a writer thread, and surviving a refused one.

The writer commits one chunk (at most ``chunk_size`` whole studies) per transaction, in
order, on the run's connection (which nothing else uses meanwhile), while the run's own
thread goes on embedding: the COPY, and the HNSW inserts it makes the server do, overlap
the model. At most one chunk is in flight, so memory stays bounded.

Values are checked before they get here (:mod:`casebase.ingest.validate`), so the server
should never refuse a chunk for a value. If it still does (a limit nobody foresaw, a
site's own trigger or constraint, or another batch that loaded the same study id a
moment ago), the chunk is written again one study per transaction: the study the server
refuses becomes a reject naming the error class and constraint (never the values), one
another run loaded meanwhile is skipped (same content) or rejected (other content), and
the rest of the chunk loads. A re-run meets the same refusal as a reject again, not as a
crash. Errors that are not about the rows (a lost connection, a full disk, a missing
privilege) stop the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from casebase.db.spaces import Space
from casebase.ingest import load
from casebase.ingest.studies import Reject

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

#: SQLSTATE classes that are about the rows written, not the server or the session:
#: data exception, integrity constraint violation, program limit exceeded (an index row
#: too large), and a PL/pgSQL RAISE (a site's trigger).
_ROW_ERROR_CLASSES = ("22", "23", "54", "P0")


@dataclass
class Written:
    """What one chunk came to."""

    loaded: list[load.PreparedStudy] = field(default_factory=list)
    skipped: list[load.PreparedStudy] = field(default_factory=list)  # loaded meanwhile
    rejected: list[tuple[load.PreparedStudy, str]] = field(default_factory=list)


def is_row_error(exc: BaseException) -> bool:
    """True for a server error about the rows written (see ``_ROW_ERROR_CLASSES``)."""
    import psycopg

    sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    return sqlstate is not None and sqlstate[:2] in _ROW_ERROR_CLASSES


def refusal_reason(exc: BaseException) -> str:
    """A reject reason for a study the server refused: the error's class, SQLSTATE and
    constraint, never its message (which may quote the row)."""
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None) if diag is not None else None
    where = f", constraint {constraint}" if constraint else ""
    sqlstate = getattr(exc, "sqlstate", None) or "?"
    return f"the database refused this study ({type(exc).__name__} {sqlstate}{where})"


def write_chunk(
    conn,
    *,
    batch: str,
    space: Space,
    studies: Sequence[load.PreparedStudy],
    rejects: Sequence[Reject],
) -> Written:
    """Write ``studies`` and ``rejects``: in one transaction, or one study at a time when
    the server refuses the chunk for a row's sake."""
    try:
        with conn.transaction():
            load.write_chunk(conn, batch=batch, space=space, studies=studies, rejects=rejects)
        return Written(loaded=list(studies))
    except Exception as exc:
        if not is_row_error(exc):
            raise
        log.warning(
            "batch %s: a chunk of %d studies was refused (%s); writing them one by one",
            batch,
            len(studies),
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
    return _one_by_one(conn, batch=batch, space=space, studies=studies, rejects=rejects)


def _one_by_one(
    conn,
    *,
    batch: str,
    space: Space,
    studies: Sequence[load.PreparedStudy],
    rejects: Sequence[Reject],
) -> Written:
    out = Written()
    for p in studies:
        try:
            with conn.transaction():
                load.write_chunk(conn, batch=batch, space=space, studies=[p], rejects=[])
            out.loaded.append(p)
            continue
        except Exception as exc:
            if not is_row_error(exc):
                raise
            refusal = exc
        prior = load.existing_studies(conn, [p.study.study_id]).get(p.study.study_id)
        conn.commit()
        if prior is not None and prior.content_sha256 == p.content_sha256:
            out.skipped.append(p)  # another run loaded the very same study meanwhile
        elif prior is not None:
            out.rejected.append(
                (
                    p,
                    f"study {p.study.study_id} was already loaded (batch {prior.batch}) with "
                    "different content; load it under a new study id or delete the old one",
                )
            )
        else:
            log.warning("batch %s: study %s refused: %s", batch, p.study.study_id, refusal)
            out.rejected.append((p, refusal_reason(refusal)))
    refused = [
        Reject(img.source, img.row_ref, p.study.study_id, reason)
        for p, reason in out.rejected
        for img in p.study.images
    ]
    with conn.transaction():
        load.write_rejects(conn, batch, [*rejects, *refused])
    return out


class ChunkWriter:
    """One chunk in flight on a thread of its own; :meth:`wait` hands back what it came
    to, or raises its error."""

    def __init__(self, conn: Connection, *, batch: str, space: Space) -> None:
        self.conn, self.batch, self.space = conn, batch, space
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="casebase-copy")
        self._writing: Future | None = None

    @property
    def idle(self) -> bool:
        return self._writing is None or self._writing.done()

    def submit(self, studies: list[load.PreparedStudy], rejects: list[Reject]) -> Written | None:
        """Wait for the chunk in flight (returned), then start writing this one."""
        done = self.wait()
        self._writing = self._pool.submit(
            write_chunk,
            self.conn,
            batch=self.batch,
            space=self.space,
            studies=studies,
            rejects=rejects,
        )
        return done

    def wait(self) -> Written | None:
        """What the chunk in flight came to (None: there was none); raises its error."""
        if self._writing is None:
            return None
        writing, self._writing = self._writing, None
        return writing.result()

    def close(self) -> None:
        """On an error elsewhere, the chunk in flight still commits or rolls back whole
        before the connection is used again; its own error, if any, is only logged."""
        try:
            if self._writing is not None:
                self.wait()
        except Exception:
            log.exception("writing the last chunk failed too")
        finally:
            self._pool.shutdown(wait=True)
