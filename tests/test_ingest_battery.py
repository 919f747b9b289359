"""Issue 12's battery: one manifest with good rows and more than 30 kinds of bad ones.

Loaded through the CLI (a subprocess: exit status and stderr are part of the contract)
and through the library into a second database. Nothing good is lost (count and ids),
every bad row is in ``casebase.rejects`` with a reason that names its problem, the
exit status is 0 with no traceback, reasons quote no patient id, and re-running the same
manifest adds nothing.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image

from casebase.ingest.pipeline import IngestOptions, ingest
from tests.conftest import REPO, drop_database, make_database

HEADER = (
    "study_id", "image_path", "patient_id", "modality", "body_part", "view", "age", "sex",
    "report", "flags", "label", "notes",
)  # fmt: skip
BATCH = "battery"
OUTSIDE = "image_path leads outside the images root {root}"
PATIENT_SECRET = "MRN-0001234 SMITH^JOHN"


def r(study_id: str, image: str = "good1.jpg", **values: str) -> list[str]:
    """A manifest row: a good one unless ``values`` spoil it."""
    row = {
        "study_id": study_id,
        "image_path": image,
        "patient_id": f"P-{study_id[:20]}",
        "modality": "CR",
        "body_part": "CHEST",
        "view": "PA",
        "age": "45",
        "sex": "F",
        "report": "FINDINGS: No pleural effusion.",
        "flags": "",
        "label": "normal",
        "notes": "",
        **values,
    }
    return [row[h] for h in HEADER]


# (rows, {study id or None: expected reason}) per kind; a row's reject is looked up by
# its line. None as study id: the id itself is bad, so the reject has none.
GOOD_IDS = {
    "G-1", "G-2", "G-MULTI", "G-ÜNÏ-研究-🙂", "G-TABS", "G-CONTROLS", "G-LINK-IN", "G-DOTS",
    "G-NOTES", "G-DUP", "G-LONG-OK",
}  # fmt: skip


def battery_rows(root: Path, outside: Path) -> list[tuple[list[str], str | None, str | None]]:
    """(row, study id in the reject, expected reason) in manifest order; reason None for
    a good row."""
    out = OUTSIDE.format(root=os.path.realpath(root))
    long_ok = "L" * 128
    return [
        # ---- good rows
        (r("G-1"), None, None),
        (r("G-2", "good2.jpg", sex="M", age="062Y", view="AP"), None, None),
        (r("G-MULTI", "good1.jpg"), None, None),
        (r("G-MULTI", "good3.jpg", view="L"), None, None),
        (r("G-ÜNÏ-研究-🙂", "good2.jpg"), None, None),
        (r("G-TABS", report="FINDINGS:\tclear lungs.\r\nIMPRESSION:\tnormal."), None, None),
        (r("G-CONTROLS", report="FINDINGS: clear\x0clungs.\x1b\x85 IMPRESSION: normal."), None,
         None),
        (r("G-LINK-IN", "link_in.jpg"), None, None),
        (r("G-DOTS", "./sub/../good3.jpg"), None, None),
        (r("G-NOTES", notes="seen by Dr. SMITH at Toronto General Hospital"), None, None),
        (r("G-DUP", "good2.jpg"), None, None),
        (r("G-LONG-OK", flags=";".join(f"f{i:02d}" for i in range(16))), None, None),
        # ---- NUL bytes and other control characters
        (r("B-NUL-REPORT", report="FINDINGS: effusion\x00."), "B-NUL-REPORT",
         "report contains a NUL byte at character 19"),
        (r("B-NUL\x00ID"), None, "study_id contains a NUL byte at character 6"),
        (r("B-NUL-EXTRA", notes="note\x00"), "B-NUL-EXTRA",
         "column notes contains a NUL byte at character 5"),
        (r("B-NUL-LABEL", label="nor\x00mal"), "B-NUL-LABEL",
         "column label contains a NUL byte at character 4"),
        (r("B-NUL-PATIENT", patient_id="P\x00-1"), "B-NUL-PATIENT",
         "patient_id contains a NUL byte at character 2"),
        (r("B-ESC\x1bID"), None, "study_id contains a control character (U+001B) at character 6"),
        (r("B-C1-PATIENT", patient_id="P-\x85-1"), "B-C1-PATIENT",
         "patient_id contains a control character (U+0085) at character 3"),
        (r("B-CTL-FLAGS", flags="portable;\x07bell"), "B-CTL-FLAGS",
         "flags contains a control character (U+0007) at character 10"),
        (r("B-CTL-PATH", "good1\x1b.jpg"), "B-CTL-PATH",
         "image_path contains a control character (U+001B) at character 6"),
        (r("B-NUL-AGE", age="4\x005"), "B-NUL-AGE", "age contains a NUL byte at character 2"),
        (r("B-DEL-VIEW", view="PA\x7f"), "B-DEL-VIEW",
         "view contains a control character (U+007F) at character 3"),
        # ---- lengths
        (r("B-REPORT-200K", report="FINDINGS: " + "x" * 199_990), "B-REPORT-200K",
         "report is 200,000 characters long (limit 65,536)"),
        (r("B" * 5000), None, "study_id is 5,000 characters long (limit 128)"),
        (r(long_ok + "X"), None, "study_id is 129 characters long (limit 128)"),
        (r("B-150-FLAGS", flags=";".join(f"flag{i}" for i in range(150))), "B-150-FLAGS",
         "flags has 150 entries (limit 16)"),
        (r("B-17-FLAGS", flags=";".join(f"f{i:02d}" for i in range(17))), "B-17-FLAGS",
         "flags has 17 entries (limit 16)"),
        (r("B-LONG-FLAG", flags="f" * 65), "B-LONG-FLAG",
         "flag 1 is 65 characters long (limit 64)"),
        (r("B-BAD-FLAG", flags="bad flag!"), "B-BAD-FLAG", "invalid flag 'bad flag!'"),
        (r("B-LONG-EXTRA", notes="n" * 16_385), "B-LONG-EXTRA",
         "column notes is 16,385 characters long (limit 16,384)"),
        (r("B-LONG-PATIENT", patient_id="p" * 129), "B-LONG-PATIENT",
         "patient_id is 129 characters long (limit 128)"),
        (r("B-LONG-PATH", "p" * 4097), "B-LONG-PATH",
         "image_path is 4,097 characters long (limit 4,096)"),
        # ---- paths that leave the images root: one reason, whether the file exists or not
        (r("B-DOTDOT", "../outside/secret.jpg"), "B-DOTDOT", out),
        (r("B-DOTDOT-MISSING", "../outside/missing.jpg"), "B-DOTDOT-MISSING", out),
        (r("B-ABSOLUTE", str(outside / "secret.jpg")), "B-ABSOLUTE", out),
        (r("B-PASSWD", "/etc/passwd"), "B-PASSWD", out),
        (r("B-LINK-OUT", "link_out.jpg"), "B-LINK-OUT", out),
        (r("B-LINK-MISSING", "link_missing.jpg"), "B-LINK-MISSING", out),
        (r("B-DIR-LINK", "dir_out/secret.jpg"), "B-DIR-LINK", out),
        # ---- files
        (r("B-TRUNC", "half.jpg"), "B-TRUNC", "truncated or corrupt image (half.jpg"),
        (r("B-MISSING", "nowhere.png"), "B-MISSING", f"file not found: {root}/nowhere.png"),
        (r("B-ZERO", "empty.png"), "B-ZERO", f"zero-byte file: {root}/empty.png"),
        (r("B-TEXT", "notes.png"), "B-TEXT", "not an image (notes.png: looks like a text file)"),
        (r("B-DCM", "nopixels.dcm"), "B-DCM", "DICOM has no pixel data"),
        (r("B-DIR", "sub"), "B-DIR", f"not a file: {root}/sub"),
        (r("B-HALF", "good1.jpg"), "B-HALF", "not loaded: another image of this study"),
        (r("B-HALF", "empty.png", view="L"), "B-HALF", f"zero-byte file: {root}/empty.png"),
        (r("B-SAME-BYTES", "good1.jpg"), "B-SAME-BYTES", "not loaded: another image of this"),
        (r("B-SAME-BYTES", "good1_copy.jpg", view="L"), "B-SAME-BYTES",
         "the same image as line {dup} of this study (identical bytes)"),
        # ---- values
        (r("B-AGE-NEG", age="-3"), "B-AGE-NEG", "impossible age '-3'"),
        (r("B-AGE-OLD", age="250"), "B-AGE-OLD", "impossible age '250'"),
        (r("B-AGE-TEXT", age="abc"), "B-AGE-TEXT", "invalid age 'abc'"),
        (r("B-SEX", sex="X7"), "B-SEX", "unknown sex code 'X7'"),
        (r("B-VIEW", view="sideways"), "B-VIEW", "unknown view 'sideways'"),
        (r("B-MODALITY", modality="ZZ"), "B-MODALITY", "unknown modality 'ZZ'"),
        (r("B-NO-MODALITY", modality=""), "B-NO-MODALITY", "missing modality"),
        (r(""), None, "missing study_id"),
        (r("B-NO-IMAGE", ""), "B-NO-IMAGE", "missing image_path"),
        # ---- rows of one study that disagree: the column is named, never the values
        (r("B-DISAGREE", "good1.jpg", patient_id=PATIENT_SECRET), "B-DISAGREE",
         "rows of study B-DISAGREE disagree on patient_id (line {first} and line {second})"),
        (r("B-DISAGREE", "good2.jpg", patient_id="MRN-0001234 SMITH^JANE"), "B-DISAGREE",
         "rows of study B-DISAGREE disagree on patient_id (line {first} and line {second})"),
        (r("G-DUP", "good2.jpg"), "G-DUP", "duplicate row: same study and image as line {dup}"),
        (r("OLD-1", "changed.png"), "OLD-1",
         "study OLD-1 was already loaded (batch old) with different content"),
        ([*r("B-EXTRA-FIELDS"), "surplus", "fields"], "B-EXTRA-FIELDS",
         "the row has 14 fields, the header 12"),
    ]  # fmt: skip


def noise_png(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)


def make_files(root: Path, outside: Path, shared_data: Path) -> None:
    from tests.test_ingest_bad_input import COVID_IMAGES, TRUNCATED_SOURCE, dicom_without_pixels

    covid = shared_data / "covid_cxr" / "images"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for i, name in enumerate(COVID_IMAGES, start=1):
        shutil.copyfile(covid / name, root / f"good{i}.jpg")
    shutil.copyfile(covid / COVID_IMAGES[0], root / "good1_copy.jpg")
    shutil.copyfile(covid / COVID_IMAGES[0], outside / "secret.jpg")  # a real image: if
    # confinement failed, it would load
    noise_png(root / "old.png", 1)
    noise_png(root / "changed.png", 2)
    data = (covid / TRUNCATED_SOURCE).read_bytes()
    (root / "half.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_text("FINDINGS: none\n", encoding="utf-8")
    dicom_without_pixels(root / "nopixels.dcm")
    (root / "link_in.jpg").symlink_to("good2.jpg")
    (root / "link_out.jpg").symlink_to("../outside/secret.jpg")
    (root / "link_missing.jpg").symlink_to("../outside/missing.jpg")
    (root / "dir_out").symlink_to(outside)


def write_manifest(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)


def start_lines(manifest: Path) -> list[int]:
    """The line each record starts on (a report with a line break spans two lines)."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        starts, start = [], reader.line_num + 1
        for _ in reader:
            starts.append(start)
            start = reader.line_num + 1
    return starts


def expected_rejects(rows, manifest: Path) -> dict[str, tuple[str | None, str]]:
    """{row_ref: (study id, reason)}, line numbers filled in."""
    starts = start_lines(manifest)
    assert len(starts) == len(rows), (len(starts), len(rows))
    lines = {id(row): n for n, (row, _, _) in zip(starts, rows, strict=True)}
    first = {}
    for row, _, _ in rows:
        first.setdefault(row[0], lines[id(row)])
    disagree = [lines[id(row)] for row, _, _ in rows if row[0] == "B-DISAGREE"]
    out = {}
    for row, study_id, reason in rows:
        if reason is None:
            continue
        reason = reason.format(first=disagree[0], second=disagree[1], dup=first[row[0]])
        out[f"line {lines[id(row)]}"] = (study_id, reason)
    return out


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def rejects_of(url: str) -> dict[str, tuple[str | None, str]]:
    rows = query(
        url, "SELECT row_ref, study_id, reason FROM casebase.rejects WHERE batch = %s", (BATCH,)
    )
    return {ref: (sid, reason) for ref, sid, reason in rows}


def loaded_ids(url: str) -> set[str]:
    rows = query(url, "SELECT study_id FROM casebase.studies WHERE batch = %s", (BATCH,))
    return {r[0] for r in rows}


def table_counts(url: str) -> dict[str, int]:
    tables = ("study", "image", "report", "report_raw", "attributes_raw", "finding", "embedding")
    return {t: query(url, f"SELECT count(*) FROM casebase.{t}")[0][0] for t in tables}


@dataclass
class Battery:
    root: Path
    manifest: Path
    rows: list
    expected: dict[str, tuple[str | None, str]]
    cli: subprocess.CompletedProcess
    cli_url: str
    lib_url: str


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", "ingest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=600,
    )


def _load_old(url: str, root: Path) -> None:
    old = root / "old.csv"
    write_manifest(old, [r("OLD-1", "old.png")])
    summary = ingest(old, IngestOptions(batch="old", model="tiny-random", workers=0), url=url)
    assert (summary.loaded, summary.rejected) == (1, 0), summary


@pytest.fixture(scope="module")
def battery(server_url: str, shared_data: Path, tmp_path_factory) -> Battery:
    base = tmp_path_factory.mktemp("battery")
    root, outside = base / "images", base / "outside"
    make_files(root, outside, shared_data)
    rows = battery_rows(root, outside)
    manifest = root / "manifest.csv"
    write_manifest(manifest, [row for row, _, _ in rows])
    cli_url = make_database(server_url, "t_battery_cli")
    lib_url = make_database(server_url, "t_battery_lib")
    for url in (cli_url, lib_url):
        _load_old(url, root)
    cli = _cli(cli_url, str(manifest), "--batch", BATCH, "--model", "tiny-random",
               "--workers", "1", "--chunk-size", "4", "--no-progress")  # fmt: skip
    options = IngestOptions(batch=BATCH, model="tiny-random", workers=0, chunk_size=4)
    ingest(manifest, options, url=lib_url)
    yield Battery(root, manifest, rows, expected_rejects(rows, manifest), cli, cli_url, lib_url)
    drop_database(server_url, "t_battery_cli")
    drop_database(server_url, "t_battery_lib")


def test_the_battery_has_more_than_30_kinds_of_bad_rows(battery: Battery) -> None:
    kinds = {reason.split(" at character")[0] for _, reason in battery.expected.values()}
    assert len(battery.expected) >= 50 and len(kinds) >= 40, sorted(kinds)


def test_cli_exits_0_without_a_traceback(battery: Battery) -> None:
    proc = battery.cli
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, out
    assert "Traceback" not in proc.stderr, out
    n_rejects = len(battery.expected)
    assert f"{len(GOOD_IDS)} loaded, 0 skipped (already there), {n_rejects} rejected" in (
        proc.stdout
    ), out


@pytest.mark.parametrize("route", ["cli", "lib"])
def test_no_good_row_is_lost(battery: Battery, route: str) -> None:
    url = battery.cli_url if route == "cli" else battery.lib_url
    assert loaded_ids(url) == GOOD_IDS
    images = dict(
        query(
            url,
            "SELECT e.study_id, count(*) FROM casebase.embeddings e JOIN casebase.studies s "
            "USING (study_id) WHERE s.batch = %s GROUP BY 1",
            (BATCH,),
        )
    )
    assert images == {sid: 2 if sid == "G-MULTI" else 1 for sid in GOOD_IDS}, images


@pytest.mark.parametrize("route", ["cli", "lib"])
def test_every_bad_row_is_a_reject_with_its_reason(battery: Battery, route: str) -> None:
    url = battery.cli_url if route == "cli" else battery.lib_url
    got = rejects_of(url)
    assert set(got) == set(battery.expected), (
        f"missing: {sorted(set(battery.expected) - set(got))}, "
        f"unexpected: {[(k, got[k]) for k in sorted(set(got) - set(battery.expected))]}"
    )
    wrong = {
        ref: (got[ref], want)
        for ref, want in battery.expected.items()
        if got[ref][0] != want[0] or want[1] not in got[ref][1]
    }
    assert not wrong, "\n".join(f"{k}: got {g!r}, want {w!r}" for k, (g, w) in wrong.items())
    one_line = {k: v for k, v in got.items() if "\n" in v[1] or len(v[1]) > 300}
    assert not one_line, one_line
    secrets = {k: v for k, v in got.items() if "SMITH" in v[1] or "MRN" in v[1]}
    assert not secrets, secrets


def test_outside_paths_get_one_reason_whether_the_file_exists_or_not(battery: Battery) -> None:
    got = rejects_of(battery.cli_url)
    by_id = {sid: reason for sid, reason in got.values()}
    existing = [by_id[s] for s in ("B-DOTDOT", "B-ABSOLUTE", "B-PASSWD", "B-LINK-OUT")]
    missing = [by_id[s] for s in ("B-DOTDOT-MISSING", "B-LINK-MISSING")]
    assert len(set(existing + missing)) == 1, existing + missing
    assert "text file" not in existing[0] and "secret" not in existing[0]


def test_controls_in_a_report_stay_raw_and_leave_the_sanitised_text(battery: Battery) -> None:
    [(raw, findings)] = query(
        battery.cli_url,
        "SELECT rr.raw_text, r.findings FROM casebase.study s "
        "JOIN casebase.report_raw rr USING (study_pk) JOIN casebase.report r USING (study_pk) "
        "WHERE s.study_id = 'G-CONTROLS'",
    )
    assert "\x0c" in raw and "\x1b" in raw and "\x85" in raw, repr(raw)
    assert not any(c in findings for c in "\x0c\x1b\x85"), repr(findings)
    [(tabs,)] = query(
        battery.cli_url,
        "SELECT rr.raw_text FROM casebase.study s JOIN casebase.report_raw rr USING (study_pk) "
        "WHERE s.study_id = 'G-TABS'",
    )
    assert "\t" in tabs and "\r\n" in tabs, repr(tabs)


def test_extra_columns_only_through_the_allow_list(battery: Battery) -> None:
    shown = dict(
        query(
            battery.cli_url,
            "SELECT study_id, attributes::text FROM casebase.studies WHERE batch = %s",
            (BATCH,),
        )
    )
    assert all(a == '{"label": "normal"}' for a in shown.values()), shown
    [(raw,)] = query(
        battery.cli_url,
        "SELECT a.attributes ->> 'notes' FROM casebase.attributes_raw a "
        "JOIN casebase.study s USING (study_pk) WHERE s.study_id = 'G-NOTES'",
    )
    assert raw == "seen by Dr. SMITH at Toronto General Hospital"


def test_rerun_adds_nothing(battery: Battery) -> None:
    before = (table_counts(battery.cli_url), rejects_of(battery.cli_url))
    again = _cli(battery.cli_url, str(battery.manifest), "--batch", BATCH, "--model",
                 "tiny-random", "--workers", "0", "--no-progress")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert f"0 loaded, {len(GOOD_IDS)} skipped" in again.stdout, again.stdout
    after = (table_counts(battery.cli_url), rejects_of(battery.cli_url))
    assert after == before
    lib = ingest(
        battery.manifest,
        IngestOptions(batch=BATCH, model="tiny-random", workers=0),
        url=battery.lib_url,
    )
    assert (lib.loaded, lib.skipped, lib.rejected) == (0, len(GOOD_IDS), len(battery.expected))
    [(status,)] = query(
        battery.cli_url, "SELECT status FROM casebase.batches WHERE batch = %s", (BATCH,)
    )
    assert status == "complete"
