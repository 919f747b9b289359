"""Values at casebase's limits load; one over is a reject; the covid manifest with a NUL
byte, a 200 kB note and a 5,000-character id loads every other row (issue 12).

Before: one NUL in one covid report failed its COPY chunk (344 good rows lost, the batch
stuck ``running``, every re-run crashing the same way); one note over 131,072 characters
made the whole manifest unreadable (0 of 633 loaded).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys

import psycopg
import pytest

from casebase.errors import InputError, ManifestError
from casebase.imaging import limits
from casebase.ingest.pipeline import IngestOptions, ingest
from tests.conftest import REPO

COVID_COLUMNS = "filename=study_id,patientid=patient_id,clinical_notes=report,date=study_date"


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def rejects(url: str, batch: str) -> dict[str, tuple[str | None, str]]:
    rows = query(
        url, "SELECT row_ref, study_id, reason FROM casebase.rejects WHERE batch = %s", (batch,)
    )
    return {ref: (sid, reason) for ref, sid, reason in rows}


def test_covid_manifest_with_bad_cells_loads_every_other_row(use_db, shared_data, tmp_path):
    src = shared_data / "covid_cxr" / "metadata.csv"
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    col = {name: header.index(name) for name in header}
    ids = [r[col["filename"]] for r in body]
    unique = [i for i in dict.fromkeys(ids) if ids.count(i) == 1]
    nul_report, long_note, nul_extra, long_id = (unique[k] for k in (3, 10, 20, 30))
    lines: dict[str, int] = {}
    for n, row in enumerate(body, start=2):  # the covid manifest has one line per row
        name = row[col["filename"]]
        if name == nul_report:
            row[col["clinical_notes"]] = row[col["clinical_notes"]][:40] + "\x00 and more"
        elif name == long_note:
            row[col["clinical_notes"]] = "FINDINGS: " + "consolidation " * 15_000  # 210 kB
        elif name == nul_extra:
            row[col["other_notes"]] = "see\x00 attached"
        elif name == long_id:
            row[col["filename"]] = "x" * 5000
        lines[name] = n
    manifest = tmp_path / "metadata.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *body])

    proc = subprocess.run(
        [sys.executable, "-m", "casebase.cli", "ingest", str(manifest), "--batch", "covid-bad",
         "--model", "tiny-random", "--columns", COVID_COLUMNS, "--set", "body_part=chest",
         "--images-root", str(shared_data / "covid_cxr"), "--no-progress"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    out = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, out
    bad = {nul_report, long_note, nul_extra, long_id}
    loaded = {
        r[0] for r in query(use_db, "SELECT study_id FROM casebase.study WHERE batch = 'covid-bad'")
    }
    assert loaded == set(dict.fromkeys(ids)) - bad, sorted(loaded ^ (set(ids) - bad))[:10]
    assert len(loaded) == 629
    got = rejects(use_db, "covid-bad")
    expected = {
        f"line {lines[nul_report]}": (nul_report, "report contains a NUL byte at character"),
        f"line {lines[long_note]}": (long_note, "report is 210,009 characters long (limit 65,536)"),
        f"line {lines[nul_extra]}": (nul_extra, "column other_notes contains a NUL byte"),
        f"line {lines[long_id]}": (None, "study_id is 5,000 characters long (limit 128)"),
    }
    for ref, (study_id, reason) in expected.items():
        assert ref in got and got[ref][0] == study_id and reason in got[ref][1], (ref, got)
    duplicates = {k: v for k, v in got.items() if k not in expected}
    assert len(duplicates) == 5, duplicates
    assert all("duplicate row" in reason for _, reason in duplicates.values()), duplicates
    [(status, n_rejects)] = query(
        use_db, "SELECT status, n_rejects FROM casebase.batches WHERE batch = 'covid-bad'"
    )
    assert (status, n_rejects) == ("complete", 9)
    keys = query(
        use_db,
        "SELECT DISTINCT jsonb_object_keys(attributes) FROM casebase.studies "
        "WHERE batch = 'covid-bad'",
    )
    assert keys == [("finding",)], keys  # location, other_notes, doi… are restricted


def _flags(n: int, length: int) -> str:
    return ";".join(f"f{i:02d}" + "x" * (length - 3) for i in range(n))


def test_values_at_their_limits_load_and_one_over_is_rejected(db_url, shared_data, tmp_path):
    """The longest values allowed, in the widest characters (4 UTF-8 bytes), fit every
    B-tree (the study key, each leaf's covering filter index) and load intact."""
    shutil.copyfile(shared_data / "covid_cxr" / "images" / "000001-9-b.jpg", tmp_path / "image.jpg")
    wide_id = "𝄞" * limits.ID_MAX
    report = ("FINDINGS: " + "No pleural effusion. Heart size is normal. " * 2000)[
        : limits.REPORT_MAX
    ]
    header = ["study_id", "image_path", "patient_id", "modality", "body_part", "view", "sex",
              "flags", "report", "label", "notes"]  # fmt: skip
    at_limit = dict(
        study_id=wide_id,
        image_path="image.jpg",
        patient_id="𝄞" * limits.ID_MAX,
        modality="CR",
        body_part="CHEST",
        view="AP Supine",  # adds portable and supine to the 16 flags
        sex="F",
        flags=_flags(limits.FLAGS_MAX, limits.CODE_MAX),
        report=report,
        label="𝄞" * limits.ATTRIBUTE_VALUE_MAX,
        notes="𝄞" * limits.ATTRIBUTE_VALUE_MAX,
    )
    over = {
        "O-ID": ("study_id", "𝄞" * (limits.ID_MAX + 1)),
        "O-PATIENT": ("patient_id", "p" * (limits.ID_MAX + 1)),
        "O-FLAGS": ("flags", _flags(limits.FLAGS_MAX + 1, 8)),
        "O-FLAG": ("flags", "f" * (limits.CODE_MAX + 1)),
        "O-REPORT": ("report", report + "."),
        "O-LABEL": ("label", "l" * (limits.ATTRIBUTE_VALUE_MAX + 1)),
        "O-NOTES": ("notes", "n" * (limits.ATTRIBUTE_VALUE_MAX + 1)),
        "O-VIEW": ("view", "v" * (limits.CODE_MAX + 1)),
    }
    rows = [at_limit]
    for study_id, (column, value) in over.items():
        rows.append({**at_limit, "report": "normal", "study_id": study_id, column: value})
    manifest = tmp_path / "limits.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows)
    batch = "𝄞" * limits.BATCH_NAME_MAX
    summary = ingest(
        manifest, IngestOptions(batch=batch, model="tiny-random", workers=0), url=db_url
    )
    loaded = query(db_url, "SELECT study_id FROM casebase.study WHERE batch = %s", (batch,))
    assert (summary.loaded, summary.rejected) == (1, len(over)), (summary, loaded)
    [(study_id, flags, raw, attrs, label)] = query(
        db_url,
        "SELECT s.study_id, s.flags, length(rr.raw_text), a.attributes, "
        "length(s.attributes ->> 'label') FROM casebase.study s "
        "JOIN casebase.report_raw rr USING (study_pk) "
        "JOIN casebase.attributes_raw a USING (study_pk) WHERE s.batch = %s",
        (batch,),
    )
    assert study_id == wide_id
    assert len(flags) == limits.FLAGS_MAX + 2 and {"portable", "supine"} <= set(flags), flags
    assert raw == limits.REPORT_MAX
    assert attrs["notes"] == at_limit["notes"] and label == limits.ATTRIBUTE_VALUE_MAX
    [(vectors,)] = query(
        db_url, "SELECT count(*) FROM casebase.embedding WHERE study_id = %s", (wide_id,)
    )
    assert vectors == 1
    got = {sid: reason for sid, reason in rejects(db_url, batch).values()}
    assert got == {
        None: "study_id is 129 characters long (limit 128)",
        "O-PATIENT": "patient_id is 129 characters long (limit 128)",
        "O-FLAGS": "flags has 17 entries (limit 16)",
        "O-FLAG": "flag 1 is 65 characters long (limit 64)",
        "O-REPORT": "report is 65,537 characters long (limit 65,536)",
        "O-LABEL": "column label is 16,385 characters long (limit 16,384)",
        "O-NOTES": "column notes is 16,385 characters long (limit 16,384)",
        "O-VIEW": "view is 65 characters long (limit 64)",
    }, got


@pytest.mark.parametrize(
    "batch, reason",
    [("b" * 65, "the batch name is 65 characters long (limit 64)"), ("a\x00b", "NUL byte")],
)
def test_a_batch_name_that_cannot_be_stored_stops_before_anything(db_url, tmp_path, batch, reason):
    manifest = tmp_path / "m.csv"
    manifest.write_text("study_id,image_path\nX-1,x.png\n", encoding="utf-8")
    before = query(db_url, "SELECT count(*) FROM casebase.ingest_batch")
    with pytest.raises(InputError, match=re.escape(reason)):
        ingest(manifest, IngestOptions(batch=batch, model="tiny-random"), url=db_url)
    assert query(db_url, "SELECT count(*) FROM casebase.ingest_batch") == before


def test_an_unclosed_quote_stops_the_manifest_instead_of_eating_rows(db_url, tmp_path) -> None:
    manifest = tmp_path / "quote.csv"
    manifest.write_text(
        'study_id,image_path,report\nQ-1,a.png,fine\nQ-2,b.png,"opened\nQ-3,c.png,lost\n',
        encoding="utf-8",
    )
    with pytest.raises(ManifestError, match="the quoted field that starts on line 3 is never"):
        ingest(manifest, IngestOptions(batch="quote", model="tiny-random"), url=db_url)
    assert query(db_url, "SELECT count(*) FROM casebase.study WHERE batch = 'quote'") == [(0,)]


def test_an_extra_column_whose_name_cannot_be_a_key_rejects_rows_with_a_value(
    db_url, shared_data, tmp_path
) -> None:
    shutil.copyfile(shared_data / "covid_cxr" / "images" / "000001-9-b.jpg", tmp_path / "a.jpg")
    long_name = "n" * (limits.ATTRIBUTE_KEY_MAX + 1)
    manifest = tmp_path / "names.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_id", "image_path", "modality", "body_part", long_name, "x\x01y"])
        writer.writerow(["N-1", "a.jpg", "CR", "CHEST", "", ""])
        writer.writerow(["N-2", "a.jpg", "CR", "CHEST", "value", ""])
        writer.writerow(["N-3", "a.jpg", "CR", "CHEST", "", "value"])
    summary = ingest(manifest, IngestOptions(batch="names", model="tiny-random", workers=0),
                     url=db_url)  # fmt: skip
    assert (summary.loaded, summary.rejected) == (1, 2), summary
    assert {sid: reason for sid, reason in rejects(db_url, "names").values()} == {
        "N-2": "the name of column 5 is 65 characters long (limit 64)",
        "N-3": "the name of column 6 contains a control character (U+0001) at character 2",
    }


@pytest.mark.parametrize(
    "attributes, message",
    [
        (("nosuch",), "--attributes names 'nosuch': in manifest a.csv it is not a column"),
        (("report",), "it is a casebase column, not an extra one"),
    ],
)
def test_attributes_must_name_extra_columns(db_url, tmp_path, attributes, message) -> None:
    manifest = tmp_path / "a.csv"
    manifest.write_text("study_id,image_path,report,grade\nA-1,a.png,x,3\n", encoding="utf-8")
    options = IngestOptions(batch="attrs", model="tiny-random", attributes=attributes)
    with pytest.raises(ManifestError, match=message):
        ingest(manifest, options, url=db_url)
