"""Findings in the database: re-labelling after a lexicon change (`casebase relabel`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

from casebase.errors import InputError
from casebase.synthesis.cues import STRICT, load_cues

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

#: casebase.setting key: the coding convention the installation's rule findings follow.
CONVENTION_KEY = "labeller_convention"


def stored_convention(conn: Connection) -> str:
    """The installation's coding convention (``conventions.yaml``), chosen by ``casebase
    relabel --convention``; ``strict`` until one is chosen. Ingest labels new batches
    with it, so that every count in a brief was made under one reading."""
    row = conn.execute(
        "SELECT value FROM casebase.setting WHERE key = %s", (CONVENTION_KEY,)
    ).fetchone()
    return str(row[0]) if row else STRICT


def relabel(
    conn: Connection,
    *,
    batch: str | None = None,
    chunk: int = 2000,
    convention: str | None = None,
) -> tuple[int, int]:
    """Re-run the rule labeller over stored sanitised reports; return (reports, findings).

    Each chunk replaces its studies' rule findings in one transaction, so readers
    never see a study without findings, and a re-run after a crash just redoes it.
    ``convention`` switches the installation's coding convention first (stored, so new
    batches follow it) and then relabels every report under it; without it the stored
    one is used. A switch applies to every report, so it cannot be limited to a batch.
    """
    from casebase.synthesis import BACKEND, labeller_version
    from casebase.synthesis.evidence import labelled_findings

    current = stored_convention(conn)
    if convention is not None and convention != current:
        load_cues(convention=convention)  # an unknown name fails here, naming the known ones
        if batch is not None:
            raise InputError(
                f"the convention is {current}: switching to {convention} relabels every "
                "report, so run it without --batch"
            )
        conn.execute(
            "INSERT INTO casebase.setting (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (CONVENTION_KEY, convention),
        )
        conn.commit()
        log.info("labelling convention: %s (was %s)", convention, current)
        current = convention
    version = labeller_version(current)

    where, params = ("WHERE s.batch = %s", [batch]) if batch else ("", [])
    rows = conn.execute(
        "SELECT r.study_pk, coalesce(r.findings, ''), coalesce(r.impression, '') "
        f"FROM casebase.report r JOIN casebase.study s USING (study_pk) {where} "
        "ORDER BY r.study_pk",
        params,
    ).fetchall()
    conn.commit()
    n_findings = 0
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        out = []
        for study_pk, findings, impression in part:
            for f in labelled_findings(findings, impression, convention=current):
                out.append(
                    (
                        study_pk,
                        f.finding,
                        f.status,
                        BACKEND,
                        version,
                        f.evidence,
                        Jsonb(f.location),
                    )
                )
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "DELETE FROM casebase.finding WHERE backend = %s AND study_pk = ANY(%s)",
                (BACKEND, [r[0] for r in part]),
            )
            cur.executemany(
                "INSERT INTO casebase.finding (study_pk, finding, status, backend, version, "
                "evidence, location) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                out,
            )
        n_findings += len(out)
        log.info("relabelled %d/%d reports", min(start + chunk, len(rows)), len(rows))
    return len(rows), n_findings
