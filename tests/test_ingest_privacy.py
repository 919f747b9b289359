"""Nothing private in what analysts read (issue 12): a login in ``casebase_analyst``
sees, in every view and through the search functions, no raw patient id, no name, and
no free-text column that skipped the sanitiser, on a batch that contains all three; the
raw values are kept where only ingest can read them.

Before: a reject reason quoted both patient ids of a study whose rows disagreed, and
every extra manifest column (free-text notes, hospital and city) landed unsanitised in
``casebase.studies.attributes``.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import psycopg
import pytest

from casebase.db.connection import connect
from casebase.ingest.pipeline import IngestOptions, ingest

PATIENT = "MRN-0001234 SMITH^JOHN"
OTHER_PATIENT = "MRN-0001234 SMITH^JANE"
REPORT = (
    "HISTORY: John Smith, MRN 0001234, seen 03/04/2019 at Princeton Plainsboro Hospital.\n"
    "FINDINGS: Small left pleural effusion. Signed by Dr. Gregory House.\n"
    "IMPRESSION: Effusion, unchanged since the study of 01/02/2019."
)
HISTORY = "Seen by Dr. Gregory House on 03/04/2019 at Princeton Plainsboro Hospital for cough."
LOCATION = "Princeton Plainsboro Teaching Hospital, New Jersey, USA"
NOTES = "Patient John SMITH lives at 221B Baker Street; phone 555-123-4567."
#: What must not appear anywhere an analyst can look.
SECRETS = ("0001234", "SMITH", "Smith", "John", "JOHN", "JANE", "Gregory", "House",
           "03/04/2019", "01/02/2019", "Princeton", "Plainsboro", "Baker", "Jersey",
           "555-123")  # fmt: skip
LOGIN = "t_privacy_analyst"


@pytest.fixture(scope="module")
def loaded(db_url: str, shared_data: Path, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("privacy")
    covid = shared_data / "covid_cxr" / "images"
    for i, name in enumerate(("000001-9-b.jpg", "000002-11-b.jpg", "000005-5-b.jpg")):
        shutil.copyfile(covid / name, folder / f"{i}.jpg")
    header = ["study_id", "image_path", "patient_id", "modality", "body_part", "age", "sex",
              "report", "label", "history", "location", "notes"]  # fmt: skip
    rows = [
        ["PRIV-1", "0.jpg", PATIENT, "CR", "CHEST", "62", "M", REPORT, "pleural_effusion",
         HISTORY, LOCATION, NOTES],
        ["PRIV-2", "1.jpg", PATIENT, "CR", "CHEST", "62", "M", "FINDINGS: Clear.", "normal",
         "", LOCATION, ""],
        ["PRIV-3", "1.jpg", PATIENT, "CR", "CHEST", "62", "M", "", "", "", "", ""],
        ["PRIV-3", "2.jpg", OTHER_PATIENT, "CR", "CHEST", "62", "M", "", "", "", "", ""],
    ]  # fmt: skip
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    options = IngestOptions(
        batch="privacy", model="tiny-random", workers=0, attributes=("label", "history")
    )
    summary = ingest(manifest, options, url=db_url)
    assert (summary.loaded, summary.rejected) == (2, 2), summary
    with connect(db_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {LOGIN}")
        admin.execute(f"CREATE ROLE {LOGIN} LOGIN IN ROLE casebase_analyst")
    yield db_url.replace("postgres@", f"{LOGIN}@")
    with connect(db_url, autocommit=True) as admin:
        admin.execute(f"DROP OWNED BY {LOGIN}")
        admin.execute(f"DROP ROLE {LOGIN}")


def _everything_an_analyst_sees(conn) -> dict[str, str]:
    views = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'casebase'::regnamespace "
            "AND c.relkind = 'v' AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1"
        ).fetchall()
    ]
    seen = {}
    for view in views:
        rows = conn.execute(f"SELECT row_to_json(v)::text FROM casebase.{view} v").fetchall()
        seen[view] = "\n".join(r[0] for r in rows)
    for study_id in ("PRIV-1", "PRIV-2"):
        rows = conn.execute(
            "SELECT row_to_json(s)::text FROM casebase.similar_cases(%s, k => 5) s", (study_id,)
        ).fetchall()
        seen[f"similar_cases({study_id})"] = "\n".join(r[0] for r in rows)
    return seen


def test_the_analyst_login_sees_no_secret_anywhere(loaded: str) -> None:
    with psycopg.connect(loaded) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == LOGIN
        seen = _everything_an_analyst_sees(conn)
    assert {"studies", "images", "findings", "batches", "rejects", "embeddings"} <= set(seen)
    leaks = {
        (where, secret): text[max(0, text.find(secret) - 80) : text.find(secret) + 80]
        for where, text in seen.items()
        for secret in SECRETS
        if secret in text
    }
    assert not leaks, leaks
    # ... and it did see the batch: the studies, the rejects, the sanitised values.
    assert "PRIV-1" in seen["studies"] and "PRIV-3" in seen["rejects"]
    assert "disagree on patient_id" in seen["rejects"], seen["rejects"]
    assert "pleural effusion" in seen["studies"].lower()
    assert '"history": "Seen by for cough."' in seen["studies"], seen["studies"]


def test_studies_show_only_allowed_columns_sanitised(loaded: str) -> None:
    with psycopg.connect(loaded) as conn:
        rows = dict(
            conn.execute(
                "SELECT study_id, attributes FROM casebase.studies WHERE batch = 'privacy'"
            ).fetchall()
        )
    assert rows == {
        "PRIV-1": {"label": "pleural_effusion", "history": "Seen by for cough."},
        "PRIV-2": {"label": "normal"},
    }, rows


@pytest.mark.parametrize("table", ["attributes_raw", "report_raw", "study", "ingest_reject"])
def test_the_analyst_login_cannot_read_the_raw_tables(loaded: str, table: str) -> None:
    with (
        psycopg.connect(loaded) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(f"SELECT * FROM casebase.{table}")


def test_raw_values_are_kept_for_ingest(db_url: str, loaded: str) -> None:
    """Restricted, not dropped: the extra columns and the report as received."""
    with connect(db_url) as conn:
        conn.execute("SET ROLE casebase_ingest")
        [(attributes, raw, patient_key)] = conn.execute(
            "SELECT a.attributes, r.raw_text, s.patient_key FROM casebase.study s "
            "JOIN casebase.attributes_raw a USING (study_pk) "
            "JOIN casebase.report_raw r USING (study_pk) WHERE s.study_id = 'PRIV-1'"
        ).fetchall()
    assert attributes == {
        "label": "pleural_effusion",
        "history": HISTORY,
        "location": LOCATION,
        "notes": NOTES,
    }
    assert raw == REPORT
    assert len(patient_key) == 32 and "SMITH" not in patient_key
