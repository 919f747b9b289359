"""A chunk the server refuses: the refused study is a reject, the rest loads, a re-run
meets the same refusal as a reject again; an error that is not about a row stops the
batch with one line and marks it failed (issue 12).

Values are checked before COPY, so nothing in casebase's own schema should refuse a
row any more. A site's own trigger still can: these tests install one (a real trigger on
the real table, raising for one study id), which is also what a concurrent batch that
loaded the same study a moment ago looks like to the writer.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from casebase.errors import DatabaseError
from casebase.ingest.pipeline import IngestOptions, ingest
from tests.conftest import REPO

TRIGGER = """
CREATE FUNCTION casebase.t_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.study_id LIKE 'POISON%' THEN
        RAISE EXCEPTION 'site rule: % may not be stored', NEW.study_id
            USING ERRCODE = '{errcode}';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER t_refuse BEFORE INSERT ON casebase.study
    FOR EACH ROW EXECUTE FUNCTION casebase.t_refuse();
"""


def sql(url: str, text: str, params: tuple | None = None) -> list[tuple]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture()
def manifest(shared_data: Path, tmp_path: Path) -> Path:
    covid = shared_data / "covid_cxr" / "images"
    for i, name in enumerate(sorted(os.listdir(covid))[:3]):
        shutil.copyfile(covid / name, tmp_path / f"{i}.jpg")
    path = tmp_path / "m.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "image_path", "modality", "body_part", "report"])
        w.writerow(["GOOD-1", "0.jpg", "CR", "CHEST", "FINDINGS: No effusion."])
        w.writerow(["POISON-1", "1.jpg", "CR", "CHEST", "FINDINGS: Small effusion."])
        w.writerow(["GOOD-2", "2.jpg", "CR", "CHEST", ""])
        w.writerow(["GOOD-3", "1.jpg", "CR", "CHEST", ""])
    return path


@pytest.fixture()
def refusing_db(server_url: str, request):
    from tests.conftest import drop_database, make_database

    errcode = request.param
    url = make_database(server_url, "t_ingest_refused")
    sql(url, TRIGGER.replace("{errcode}", errcode))
    yield url
    drop_database(server_url, "t_ingest_refused")


def _cli(url: str, manifest: Path, batch: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", "ingest", str(manifest), "--batch", batch,
         "--model", "tiny-random", "--workers", "0", "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.parametrize("refusing_db", ["23514"], indirect=True)  # check_violation
def test_a_refused_study_is_a_reject_and_the_chunk_loads(refusing_db, manifest) -> None:
    options = IngestOptions(batch="r", model="tiny-random", workers=0, chunk_size=256)
    summary = ingest(manifest, options, url=refusing_db)
    assert (summary.loaded, summary.rejected, summary.complete) == (3, 1, True), summary
    loaded = sql(refusing_db, "SELECT study_id FROM casebase.study ORDER BY 1")
    assert loaded == [("GOOD-1",), ("GOOD-2",), ("GOOD-3",)]
    [(ref, study_id, reason)] = sql(
        refusing_db, "SELECT row_ref, study_id, reason FROM casebase.rejects"
    )
    assert (ref, study_id) == ("line 3", "POISON-1")
    assert reason == "the database refused this study (CheckViolation 23514)", reason
    half = sql(
        refusing_db,
        "SELECT s.study_id FROM casebase.study s WHERE NOT EXISTS "
        "(SELECT 1 FROM casebase.embedding e WHERE e.study_pk = s.study_pk)",
    )
    assert half == []
    # The re-run meets the same refusal as a reject, not as a crash.
    proc = _cli(refusing_db, manifest, "r")
    out = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, out
    assert "0 loaded, 3 skipped (already there), 1 rejected" in proc.stdout, out
    assert sql(refusing_db, "SELECT status, error FROM casebase.batches") == [("complete", None)]


@pytest.mark.parametrize("refusing_db", ["42501"], indirect=True)  # insufficient_privilege
def test_an_error_not_about_a_row_stops_the_batch_in_one_line(refusing_db, manifest) -> None:
    options = IngestOptions(batch="p", model="tiny-random", workers=0)
    with pytest.raises(DatabaseError) as info:
        ingest(manifest, options, url=refusing_db)
    message = str(info.value)
    assert message.startswith("batch p stopped: site rule: POISON-1 may not be stored"), message
    assert "\n" not in message
    [(status, error)] = sql(refusing_db, "SELECT status, error FROM casebase.batches")
    assert status == "failed" and error.startswith("InsufficientPrivilege: site rule"), error
    proc = _cli(refusing_db, manifest, "p")
    lines = proc.stderr.strip().splitlines()
    out = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, out
    assert lines[-1].startswith("casebase: error: batch p stopped: "), out
    # Fixed (the site drops its rule), the batch finishes.
    sql(refusing_db, "DROP TRIGGER t_refuse ON casebase.study")
    summary = ingest(manifest, options, url=refusing_db)
    assert summary.complete and summary.loaded == 4, summary
    assert sql(refusing_db, "SELECT status, error FROM casebase.batches") == [("complete", None)]
