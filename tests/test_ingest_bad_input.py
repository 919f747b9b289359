"""Ingest on bad input: each bad row or file is a reject with its reason; the rest loads.

One manifest holds good studies and one row of each kind of bad input (issue 3, "Bad
input"); it is loaded once per module (``bad_batch``) and the rejects and loaded rows are
compared with exact expectations. Manifests that cannot be read at all stop the batch
with a one-line error and load nothing. Re-runs are idempotent, and fixing a bad file
then re-running loads that row and clears its reject. A few checks go through the CLI
for its exit codes (a subprocess: slow, so only where the exit code is the point).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image

from casebase.errors import ManifestError
from casebase.ingest.pipeline import IngestOptions, IngestSummary, ingest

REPO = Path(__file__).resolve().parents[1]
COVID_IMAGES = ("000001-9-b.jpg", "000002-11-b.jpg", "000005-5-b.jpg")
TRUNCATED_SOURCE = "yxppt-2020-02-19_00-51-27_287214-day8.jpg"
HEADER = (
    "study_id",
    "image_path",
    "patient_id",
    "modality",
    "body_part",
    "view",
    "age",
    "sex",
    "report",
)

OLD_BATCH = "2026-01"
BAD_BATCH = "2026-02"


# ------------------------------------------------------------------------------ helpers
def options(batch: str) -> IngestOptions:
    return IngestOptions(batch=batch, model="tiny-random", workers=0, progress=False)


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def rejects(url: str, batch: str) -> dict[str, tuple[str | None, str]]:
    """{row_ref: (study_id, reason)} of one batch."""
    rows = query(
        url, "SELECT row_ref, study_id, reason FROM casebase.rejects WHERE batch = %s", (batch,)
    )
    out = {r[0]: (r[1], r[2]) for r in rows}
    assert len(out) == len(rows), f"duplicate reject rows: {rows}"
    return out


def counts(url: str) -> dict[str, int]:
    return {
        name: query(url, f"SELECT count(*) FROM casebase.{name}")[0][0]
        for name in ("studies", "images", "embeddings", "rejects")
    }


def studies_of(url: str, batch: str) -> dict[str, tuple]:
    rows = query(
        url,
        "SELECT study_id, modality, age, sex, view, n_images FROM casebase.studies "
        "WHERE batch = %s",
        (batch,),
    )
    return {r[0]: r[1:] for r in rows}


def embeddings_per_study(url: str) -> dict[str, int]:
    rows = query(url, "SELECT study_id, count(*) FROM casebase.embeddings GROUP BY study_id")
    return dict(rows)


def write_manifest(path: Path, rows: list[tuple], *, header: tuple = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def noise_png(path: Path, seed: int) -> Path:
    """A small greyscale PNG whose content (and hash) depends on the seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def dicom_without_pixels(path: Path) -> Path:
    """A DX "for presentation" header with every image attribute but PixelData."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientID = "P-DCM"
    ds.PatientSex = "F"
    ds.PatientAge = "050Y"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.save_as(path, enforce_file_format=True)
    return path


def row(study_id: str, image: str, *, age="45", sex="F", view="PA", patient=None, report=""):
    return (study_id, image, patient or f"P-{study_id}", "CR", "CHEST", view, age, sex, report)


def run_cli(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", "ingest", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode != 0, out
    assert "Traceback" not in proc.stderr, out
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("casebase: error: "), out
    for needle in needles:
        assert needle in lines[0], out
    return lines[0]


# ----------------------------------------------------------------------------- fixtures
@dataclass
class BadBatch:
    folder: Path
    manifest: Path
    summary: IngestSummary
    rejects: dict[str, tuple[str | None, str]]
    studies: dict[str, tuple]
    embeddings: dict[str, int]
    old_before: list[tuple]
    old_after: list[tuple]


OLD_STUDY_SQL = (
    "SELECT s.study_id, s.batch, s.age, s.sex, i.sha256, i.uri, s.created_at "
    "FROM casebase.studies s JOIN casebase.images i USING (study_id) WHERE s.study_id = %s"
)

# row_ref → (study_id, reason that the reject must contain); paths are filled in below.
EXPECTED_BAD = {
    "line 5": ("B-TRUNC", "truncated or corrupt image (half.jpg: image file is truncated"),
    "line 6": ("B-MISSING", "file not found: {folder}/nowhere.png"),
    "line 7": ("B-ZERO", "zero-byte file: {folder}/empty.png"),
    "line 8": ("B-ZERO", "not loaded: another image of this study was rejected"),
    "line 9": ("B-TEXT", "not an image (notes.png: looks like a text file)"),
    "line 10": ("B-DCM", "DICOM has no pixel data"),
    "line 11": ("B-AGE-NEG", "impossible age '-3'"),
    "line 12": ("B-AGE-OLD", "impossible age '250'"),
    "line 13": ("B-SEX", "unknown sex code 'X7'"),
    # The column and the rows that disagree, never their values (issue 12).
    "line 14": ("B-DISAGREE", "rows of study B-DISAGREE disagree on age (line 14 and line 15)"),
    "line 15": ("B-DISAGREE", "rows of study B-DISAGREE disagree on age (line 14 and line 15)"),
    "line 16": (
        "OLD-1",
        f"study OLD-1 was already loaded (batch {OLD_BATCH}) with different content",
    ),
    # A value error rejects the whole study: the rows before and after it as well.
    "line 17": ("B-PARTIAL", "not loaded: another row of this study was rejected"),
    "line 18": ("B-PARTIAL", "unknown view 'sideways'"),
    "line 19": ("B-PARTIAL", "not loaded: another row of this study was rejected"),
}


def monthly_rows(partial_view: str = "sideways") -> list[tuple]:
    """The bad batch's manifest rows (line numbers as in the file, header on line 1)."""
    return [
        row("G-1", "good1.jpg", report="FINDINGS: No pleural effusion."),  # line 2
        row("G-2", "good2.jpg", age="062Y", sex="M", view="AP"),  # line 3
        row("G-3", "good3.jpg", age="", sex=""),  # line 4
        row("B-TRUNC", "half.jpg"),  # line 5
        row("B-MISSING", "nowhere.png"),  # line 6
        row("B-ZERO", "empty.png"),  # line 7
        row("B-ZERO", "extra.png", view="L"),  # line 8
        row("B-TEXT", "notes.png"),  # line 9
        row("B-DCM", "nopixels.dcm"),  # line 10
        row("B-AGE-NEG", "good1.jpg", age="-3"),  # line 11
        row("B-AGE-OLD", "good1.jpg", age="250"),  # line 12
        row("B-SEX", "good1.jpg", sex="X7"),  # line 13
        row("B-DISAGREE", "good1.jpg", age="40"),  # line 14
        row("B-DISAGREE", "good2.jpg", age="41"),  # line 15
        row("OLD-1", "changed.png", age="70", sex="M"),  # line 16
        row("B-PARTIAL", "good3.jpg"),  # line 17
        row("B-PARTIAL", "extra.png", view=partial_view),  # line 18
        row("B-PARTIAL", "good1.jpg", view="L"),  # line 19
    ]


@pytest.fixture(scope="module")
def bad_batch(db_url: str, shared_data: Path, tmp_path_factory) -> BadBatch:
    """Batch OLD_BATCH loads OLD-1; batch BAD_BATCH is good rows + one of each bad input."""
    folder = tmp_path_factory.mktemp("bad_batch")
    covid = shared_data / "covid_cxr" / "images"
    for i, name in enumerate(COVID_IMAGES, start=1):
        shutil.copyfile(covid / name, folder / f"good{i}.jpg")
    noise_png(folder / "old.png", seed=1)
    noise_png(folder / "changed.png", seed=2)
    noise_png(folder / "extra.png", seed=3)
    data = (covid / TRUNCATED_SOURCE).read_bytes()
    (folder / "half.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("Findings: no pleural effusion.\n", encoding="utf-8")
    dicom_without_pixels(folder / "nopixels.dcm")

    old = write_manifest(folder / "old.csv", [row("OLD-1", "old.png", age="70", sex="M")])
    old_summary = ingest(old, options(OLD_BATCH), url=db_url)
    assert (old_summary.loaded, old_summary.rejected) == (1, 0), old_summary
    old_before = query(db_url, OLD_STUDY_SQL, ("OLD-1",))

    manifest = write_manifest(folder / "monthly.csv", monthly_rows())
    summary = ingest(manifest, options(BAD_BATCH), url=db_url)
    return BadBatch(
        folder=folder,
        manifest=manifest,
        summary=summary,
        rejects=rejects(db_url, BAD_BATCH),
        studies=studies_of(db_url, BAD_BATCH),
        embeddings=embeddings_per_study(db_url),
        old_before=old_before,
        old_after=query(db_url, OLD_STUDY_SQL, ("OLD-1",)),
    )


def assert_rejects_match(got: dict, expected: dict, folder: Path) -> None:
    assert set(got) == set(expected), f"row refs differ: {sorted(got)}"
    for ref, (study_id, reason) in expected.items():
        reason = reason.format(folder=folder)
        assert got[ref][0] == study_id, (ref, got[ref])
        assert reason in got[ref][1], f"{ref}: expected {reason!r} in {got[ref][1]!r}"
        assert "\n" not in got[ref][1], (ref, got[ref])


# -------------------------------------------------------------------------------- tests
def test_each_bad_input_is_rejected_with_its_reason(bad_batch: BadBatch) -> None:
    assert_rejects_match(bad_batch.rejects, EXPECTED_BAD, bad_batch.folder)


def test_rejects_name_the_manifest_as_source(bad_batch: BadBatch, db_url: str) -> None:
    sources = query(
        db_url, "SELECT DISTINCT source FROM casebase.rejects WHERE batch = %s", (BAD_BATCH,)
    )
    assert sources == [(str(bad_batch.manifest),)]


def test_good_rows_load_beside_the_rejects(bad_batch: BadBatch) -> None:
    s = bad_batch.summary
    assert (s.loaded, s.skipped, s.rejected) == (3, 0, len(EXPECTED_BAD)), s
    assert s.complete, s
    assert s.per_modality["CXR"]["loaded"] == 3, s.per_modality
    assert bad_batch.studies == {
        "G-1": ("CXR", 45.0, "F", "PA", 1),
        "G-2": ("CXR", 62.0, "M", "AP", 1),
        "G-3": ("CXR", None, None, "PA", 1),
    }
    assert bad_batch.embeddings == {"OLD-1": 1, "G-1": 1, "G-2": 1, "G-3": 1}


def test_changed_study_is_rejected_and_old_row_unchanged(bad_batch: BadBatch) -> None:
    assert len(bad_batch.old_before) == 1, bad_batch.old_before
    assert bad_batch.old_after == bad_batch.old_before
    assert bad_batch.old_after[0][1] == OLD_BATCH
    assert bad_batch.old_after[0][5].endswith("old.png")
    _, reason = bad_batch.rejects["line 16"]
    assert "load it under a new study id or delete the old one" in reason


def test_rerun_adds_nothing_then_fixed_file_loads(bad_batch: BadBatch, db_url: str) -> None:
    before = counts(db_url)
    again = ingest(bad_batch.manifest, options(BAD_BATCH), url=db_url)
    assert (again.loaded, again.skipped, again.rejected) == (0, 3, len(EXPECTED_BAD)), again
    assert counts(db_url) == before
    assert_rejects_match(rejects(db_url, BAD_BATCH), EXPECTED_BAD, bad_batch.folder)
    assert studies_of(db_url, BAD_BATCH) == bad_batch.studies
    assert query(db_url, OLD_STUDY_SQL, ("OLD-1",)) == bad_batch.old_before

    # Fix the zero-byte file and the bad view: both studies load whole, and their rejects go.
    noise_png(bad_batch.folder / "empty.png", seed=4)
    write_manifest(bad_batch.manifest, monthly_rows(partial_view="PA"))
    fixed = ingest(bad_batch.manifest, options(BAD_BATCH), url=db_url)
    assert (fixed.loaded, fixed.skipped, fixed.rejected) == (2, 3, len(EXPECTED_BAD) - 5), fixed
    gone = ("line 7", "line 8", "line 17", "line 18", "line 19")
    expected = {k: v for k, v in EXPECTED_BAD.items() if k not in gone}
    assert_rejects_match(rejects(db_url, BAD_BATCH), expected, bad_batch.folder)
    loaded = studies_of(db_url, BAD_BATCH)
    assert loaded == {
        **bad_batch.studies,
        "B-ZERO": ("CXR", 45.0, "F", "PA", 2),
        "B-PARTIAL": ("CXR", 45.0, "F", "PA", 3),
    }
    assert embeddings_per_study(db_url) == {**bad_batch.embeddings, "B-ZERO": 2, "B-PARTIAL": 3}
    assert counts(db_url) == {
        "studies": before["studies"] + 2,
        "images": before["images"] + 5,
        "embeddings": before["embeddings"] + 5,
        "rejects": before["rejects"] - 5,
    }


def _latin1_manifest(folder: Path, shared_data: Path) -> Path:
    shutil.copyfile(shared_data / "covid_cxr" / "images" / COVID_IMAGES[0], folder / "latin1.jpg")
    text = (
        "study_id,image_path,patient_id,modality,body_part,view,age,sex,report\n"
        "L-1,latin1.jpg,P-L1,CR,CHEST,PA,33,F,FINDINGS: normal.\n"
        "L-2,latin1.jpg,P-L2,CR,CHEST,PA,34,M,FINDINGS: épanchement pleural.\n"
    )
    path = folder / "latin1.csv"
    path.write_bytes(text.encode("latin-1"))
    return path


def test_manifest_not_utf8_stops_before_loading(
    db_url: str, shared_data: Path, tmp_path: Path
) -> None:
    manifest = _latin1_manifest(tmp_path, shared_data)
    before = counts(db_url)
    with pytest.raises(ManifestError) as info:
        ingest(manifest, options("latin1"), url=db_url)
    message = str(info.value)
    assert "manifest latin1.csv is not UTF-8 (line 3: byte 0xe9)" in message
    assert "\n" not in message
    after = counts(db_url)
    assert {k: after[k] for k in ("studies", "images", "embeddings")} == {
        k: before[k] for k in ("studies", "images", "embeddings")
    }
    assert rejects(db_url, "latin1") == {"manifest": (None, message)}

    # Re-saved as UTF-8, the batch runs: the row loads and the manifest reject is gone.
    manifest.write_bytes(manifest.read_bytes().decode("latin-1").encode("utf-8"))
    summary = ingest(manifest, options("latin1"), url=db_url)
    assert (summary.loaded, summary.rejected) == (2, 0), summary
    assert sorted(studies_of(db_url, "latin1")) == ["L-1", "L-2"]
    assert rejects(db_url, "latin1") == {}
    assert query(db_url, "SELECT space FROM casebase.batches WHERE batch = 'latin1'") == [
        ("tiny-random",)
    ]


def test_missing_required_column_stops_before_loading(
    db_url: str, shared_data: Path, tmp_path: Path
) -> None:
    shutil.copyfile(shared_data / "covid_cxr" / "images" / COVID_IMAGES[0], tmp_path / "a.jpg")
    manifest = write_manifest(
        tmp_path / "nocol.csv",
        [("N-1", "P-N1", "CR", "CHEST", "PA", "50", "F")],
        header=("study_id", "patient_id", "modality", "body_part", "view", "age", "sex"),
    )
    before = counts(db_url)
    message = "manifest nocol.csv lacks the required column 'image_path'"
    with pytest.raises(ManifestError, match=re.escape(message)):
        ingest(manifest, options("nocol"), url=db_url)
    after = counts(db_url)
    assert after["studies"] == before["studies"]
    assert after["embeddings"] == before["embeddings"]
    assert studies_of(db_url, "nocol") == {}
    [(ref, (study_id, reason))] = rejects(db_url, "nocol").items()
    assert (ref, study_id) == ("manifest", None)
    assert "lacks the required column 'image_path'" in reason


def test_missing_manifest_stops(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "no-such-manifest.csv"
    with pytest.raises(
        ManifestError, match=r"^no such manifest or folder: .*no-such-manifest\.csv$"
    ):
        ingest(path, options("nofile"), url=db_url)
    assert studies_of(db_url, "nofile") == {}


# ---------------------------------------------------------------------------------- CLI
def test_cli_batch_with_rejects_exits_0(db_url: str, shared_data: Path, tmp_path: Path) -> None:
    shutil.copyfile(shared_data / "covid_cxr" / "images" / COVID_IMAGES[1], tmp_path / "good.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    manifest = write_manifest(
        tmp_path / "cli.csv",
        [row("C-1", "good.jpg"), row("C-2", "empty.jpg"), row("C-3", "good.jpg", sex="X7")],
    )
    proc = run_cli(
        str(manifest),
        "--batch",
        "cli",
        "--model",
        "tiny-random",
        "--workers",
        "0",
        "--no-progress",
        url=db_url,
    )
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, out
    assert "Traceback" not in proc.stderr, out
    assert "1 loaded, 0 skipped (already there), 2 rejected" in proc.stdout, out
    assert "SELECT * FROM casebase.rejects WHERE batch = 'cli'" in proc.stdout, out
    assert sorted(studies_of(db_url, "cli")) == ["C-1"]
    got = rejects(db_url, "cli")
    assert_rejects_match(
        got,
        {
            "line 3": ("C-2", "zero-byte file: {folder}/empty.jpg"),
            "line 4": ("C-3", "unknown sex code 'X7'"),
        },
        tmp_path,
    )


@pytest.mark.parametrize("kind", ["not-utf8", "no-image-path-column", "no-such-file"])
def test_cli_batch_that_cannot_run_exits_nonzero(
    kind: str, db_url: str, shared_data: Path, tmp_path: Path
) -> None:
    if kind == "not-utf8":
        manifest = _latin1_manifest(tmp_path, shared_data)
        needles = ("latin1.csv", "not UTF-8", "line 3")
    elif kind == "no-image-path-column":
        manifest = write_manifest(tmp_path / "cols.csv", [("X-1",)], header=("study_id",))
        needles = ("cols.csv", "lacks the required column 'image_path'")
    else:
        manifest = tmp_path / "absent.csv"
        needles = ("no such manifest or folder", "absent.csv")
    batch = f"cli-{kind}"
    before = counts(db_url)
    proc = run_cli(str(manifest), "--batch", batch, "--model", "tiny-random", url=db_url)
    line = assert_one_line_error(proc, *needles)
    after = counts(db_url)
    assert after["studies"] == before["studies"]
    assert after["embeddings"] == before["embeddings"]
    assert studies_of(db_url, batch) == {}
    got = rejects(db_url, batch)
    assert list(got) == ["manifest"], got
    assert got["manifest"][1] == line.removeprefix("casebase: error: ")
