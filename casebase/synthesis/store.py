"""Findings in the database: re-labelling after a lexicon change (`casebase relabel`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)


def relabel(conn: Connection, *, batch: str | None = None, chunk: int = 2000) -> tuple[int, int]:
    """Re-run the rule labeller over stored sanitised reports; return (reports, findings).

    Each chunk replaces its studies' rule findings in one transaction, so readers
    never see a study without findings, and a re-run after a crash just redoes it.
    """
    from casebase.synthesis import BACKEND, LABELLER_VERSION
    from casebase.synthesis.evidence import labelled_findings

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
            for f in labelled_findings(findings, impression):
                out.append(
                    (
                        study_pk,
                        f.finding,
                        f.status,
                        BACKEND,
                        LABELLER_VERSION,
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
