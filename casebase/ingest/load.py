"""Writing prepared studies into PostgreSQL with binary COPY, one transaction per chunk.

A chunk commits whole studies only (study, images, report, findings, vectors
together), so a batch killed at any moment leaves no half-written study, and
a re-run skips what is already there by study id and content hash.

Also the batch's own bookkeeping: its row in ``ingest_batch`` (running, complete, or
failed with the error), and the advisory lock that keeps two runs of one batch (and
shard) from loading it at the same time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from psycopg.types.json import Jsonb

from casebase.db import bulk
from casebase.db import spaces as db_spaces
from casebase.db.bulk import copy_rows
from casebase.db.connection import scalar
from casebase.db.spaces import Space
from casebase.errors import IngestError
from casebase.ingest.studies import Reject, StudyInput

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from psycopg import Connection

    from casebase.ingest.sanitize import SanitizedReport
    from casebase.synthesis.evidence import LabelledFinding as PreparedFinding


@dataclass(frozen=True)
class PreparedImage:
    uri: str
    sha256: str
    size_bytes: int
    width: int | None
    height: int | None
    view: str | None
    flags: tuple[str, ...]
    quality: dict
    vector: np.ndarray


# A finding as stored is the synthesis labeller's own value (LabelledFinding), imported
# for typing only so that loading does not pull in spaCy.


@dataclass
class PreparedStudy:
    study: StudyInput
    patient_key: str | None
    content_sha256: str
    flags: tuple[str, ...]
    sanitized: SanitizedReport | None
    raw_report: str | None
    findings: list[PreparedFinding] = field(default_factory=list)
    images: list[PreparedImage] = field(default_factory=list)
    finding_backend: str = "rules"
    finding_version: str = ""


@dataclass(frozen=True)
class LoadedStudy:
    content_sha256: str
    batch: str


def patient_salt(conn: Connection) -> str:
    row = conn.execute("SELECT value FROM casebase.setting WHERE key = 'patient_salt'").fetchone()
    if row is None:
        raise IngestError("casebase.setting has no patient_salt: run `casebase db upgrade`")
    return row[0]


def batch_lock_key(name: str, shard: tuple[int, int]) -> int:
    """The advisory lock key of one batch and shard: 64 bits of a SHA-256, signed.

    Per shard, so that ``--shard I/N`` runs of one batch still load in parallel."""
    text = f"casebase ingest\0{name}\0{shard[0]}/{shard[1]}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def try_lock_batch(conn: Connection, name: str, shard: tuple[int, int]) -> bool:
    """Take this session's advisory lock on the batch (and shard), or say it is taken.

    A session lock: it outlives transactions and goes with the connection, so a run
    killed with ``kill -9`` frees it as soon as the server notices the closed socket."""
    locked = bool(scalar(conn, "SELECT pg_try_advisory_lock(%s)", (batch_lock_key(name, shard),)))
    conn.commit()
    return locked


def begin_batch(conn: Connection, name: str, source: str, space: Space) -> None:
    conn.execute(
        "INSERT INTO casebase.ingest_batch (name, source, space_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (name) DO NOTHING",
        (name, source, space.space_id),
    )
    # A run that failed left the batch ``failed``: this one is running it again.
    conn.execute(
        "UPDATE casebase.ingest_batch SET status = 'running', error = NULL "
        "WHERE name = %s AND status = 'failed'",
        (name,),
    )
    row = conn.execute(
        "SELECT b.space_id, s.name FROM casebase.ingest_batch b "
        "LEFT JOIN casebase.embedding_space s USING (space_id) WHERE b.name = %s",
        (name,),
    ).fetchone()
    assert row is not None  # the batch row was inserted just above
    if row[0] is not None and row[0] != space.space_id:
        raise IngestError(
            f"batch {name!r} was loaded into space {row[1]!r}, not {space.name!r}: "
            "use the same model, or another batch name"
        )
    # A batch first recorded by a run whose manifest could not be read has no space yet,
    # and a reject saying the manifest is unreadable: the manifest reads now, so both go.
    conn.execute(
        "UPDATE casebase.ingest_batch SET space_id = %s WHERE name = %s AND space_id IS NULL",
        (space.space_id, name),
    )
    conn.execute(
        "DELETE FROM casebase.ingest_reject "
        "WHERE batch = %s AND source = %s AND row_ref = 'manifest'",
        (name, source),
    )


def fail_batch(conn: Connection, name: str, error: str) -> None:
    """Record that a run stopped on ``error`` (one line), unless the batch is complete."""
    conn.execute(
        "UPDATE casebase.ingest_batch SET status = 'failed', error = %s "
        "WHERE name = %s AND status <> 'complete'",
        (error, name),
    )


def is_database_error(exc: BaseException) -> bool:
    """A psycopg error (the server's, or the connection's)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.Error)


def record_stop(conn: Connection, url: str, batch: str, exc: BaseException) -> None:
    """Mark the batch ``failed`` with a one-line error; on a broken connection, through a
    new one. Never raises: the run's own error is what the caller must see."""
    from casebase.db.connection import connect

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        error = "interrupted"
    for attempt in ("same connection", "new connection"):
        try:
            if attempt == "same connection":
                conn.rollback()
                fail_batch(conn, batch, error[:300])
                conn.commit()
            else:
                with connect(url) as fresh:
                    fail_batch(fresh, batch, error[:300])
                    fresh.commit()
            return
        except Exception as failure:  # best effort: the run's own error is what counts
            log.debug("could not mark batch %s failed (%s): %s", batch, attempt, failure)
    log.warning("batch %s stopped (%s) and could not be marked failed", batch, error)


def record_manifest_failure(conn: Connection, batch: str, source: str, reason: str) -> None:
    """A manifest that cannot be read: the batch is recorded with one reject saying why."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO casebase.ingest_batch (name, source) VALUES (%s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (batch, source),
        )
        write_rejects(conn, batch, [Reject(source, "manifest", None, reason)])


def existing_studies(conn: Connection, study_ids: Sequence[str]) -> dict[str, LoadedStudy]:
    if not study_ids:
        return {}
    rows = conn.execute(
        "SELECT study_id, content_sha256, batch FROM casebase.study WHERE study_id = ANY(%s)",
        (list(study_ids),),
    ).fetchall()
    return {r[0]: LoadedStudy(r[1], r[2]) for r in rows}


def _allocate(conn: Connection, table: str, column: str, n: int) -> list[int]:
    if n == 0:
        return []
    rows = conn.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
        (f"casebase.{table}", column, n),
    ).fetchall()
    return [r[0] for r in rows]


def write_rejects(conn: Connection, batch: str, rejects: Sequence[Reject]) -> None:
    if not rejects:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO casebase.ingest_reject (batch, source, row_ref, study_id, reason) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (batch, source, row_ref) "
            "DO UPDATE SET reason = EXCLUDED.reason, study_id = EXCLUDED.study_id, "
            "created_at = now()",
            [(batch, r.source, r.row_ref, r.study_id, r.reason) for r in rejects],
        )


def write_chunk(
    conn, *, batch: str, space: Space, studies: Sequence[PreparedStudy], rejects: Sequence[Reject]
) -> None:
    """Write whole studies and their rejects in the caller's transaction."""
    for modality in sorted({s.study.modality for s in studies}):
        db_spaces.ensure_partition(conn, space, modality)
    study_pks = _allocate(conn, "study", "study_pk", len(studies))
    n_images = sum(len(s.images) for s in studies)
    image_pks = iter(_allocate(conn, "image", "image_pk", n_images))
    study_rows: list = []
    image_rows: list = []
    report_rows: list = []
    raw_rows: list = []
    attribute_rows: list = []
    finding_rows: list = []
    vector_rows: list = []
    for pk, p in zip(study_pks, studies, strict=True):
        s = p.study
        study_rows.append(
            (
                pk,
                s.study_id,
                p.patient_key,
                s.modality,
                s.body_part,
                s.view,
                s.age,
                s.sex,
                s.study_date,
                list(p.flags),
                batch,
                p.content_sha256,
                Jsonb(s.attributes),
            )
        )
        if p.sanitized is not None and (p.sanitized.findings or p.sanitized.impression):
            report_rows.append(
                (pk, p.sanitized.findings, p.sanitized.impression, list(p.sanitized.removed))
            )
        if p.raw_report:
            raw_rows.append((pk, p.raw_report, s.accession))
        if s.raw_attributes:
            attribute_rows.append((pk, Jsonb(s.raw_attributes)))
        for f in p.findings:
            finding_rows.append(
                (
                    pk,
                    f.finding,
                    f.status,
                    p.finding_backend,
                    p.finding_version,
                    f.evidence,
                    Jsonb(f.location),
                )
            )
        for img in p.images:
            ipk = next(image_pks)
            image_rows.append(
                (
                    ipk,
                    pk,
                    img.uri,
                    img.sha256,
                    img.size_bytes,
                    img.width,
                    img.height,
                    img.view,
                    list(img.flags),
                    Jsonb(img.quality),
                )
            )
            vector_rows.append(
                (
                    space.space_id,
                    s.modality,
                    ipk,
                    pk,
                    s.study_id,
                    p.patient_key,
                    s.age,
                    s.sex,
                    img.view or s.view,
                    sorted(set(p.flags) | set(img.flags)),
                    s.study_date,
                    batch,
                    np.asarray(img.vector, dtype=np.float32),
                )
            )
    copy_rows(conn, bulk.STUDY_ROWS, study_rows)
    copy_rows(conn, bulk.IMAGE_ROWS, image_rows)
    copy_rows(conn, bulk.REPORT_ROWS, report_rows)
    copy_rows(conn, bulk.REPORT_RAW_ROWS, raw_rows)
    copy_rows(conn, bulk.ATTRIBUTES_RAW_ROWS, attribute_rows)
    copy_rows(conn, bulk.FINDING_ROWS, finding_rows)
    copy_rows(conn, bulk.EMBEDDING_ROWS, vector_rows)
    write_rejects(conn, batch, rejects)
    # Rows that load now are no longer rejects of this batch (e.g. a fixed file re-run).
    loaded_rows = [(img.source, img.row_ref) for p in studies for img in p.study.images]
    if loaded_rows:
        conn.execute(
            "DELETE FROM casebase.ingest_reject r USING unnest(%s::text[], %s::text[]) "
            "AS l(source, row_ref) WHERE r.batch = %s AND r.source = l.source "
            "AND r.row_ref = l.row_ref",
            ([s for s, _ in loaded_rows], [r for _, r in loaded_rows], batch),
        )


def finish_batch(conn: Connection, name: str, shard: str, stats: dict, n_shards: int) -> bool:
    """Record one shard's stats; the batch is complete when every shard is. Returns that."""
    conn.execute("SELECT 1 FROM casebase.ingest_batch WHERE name = %s FOR UPDATE", (name,))
    conn.execute(
        "UPDATE casebase.ingest_batch SET stats = jsonb_set(stats, '{shards}', "
        "coalesce(stats->'shards', '{}'::jsonb) || jsonb_build_object(%s::text, %s::jsonb)) "
        "WHERE name = %s",
        (shard, json.dumps(stats), name),
    )
    done = scalar(
        conn,
        "SELECT count(*) FROM jsonb_object_keys((SELECT stats->'shards' FROM "
        "casebase.ingest_batch WHERE name = %s)) k WHERE k LIKE %s",
        (name, f"%/{n_shards}"),
    )
    complete = done >= n_shards
    if complete:
        conn.execute(
            "UPDATE casebase.ingest_batch SET status = 'complete', finished_at = now(), "
            "error = NULL WHERE name = %s",
            (name,),
        )
    return complete
