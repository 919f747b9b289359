"""Ingest end to end on real data: the covid set through --columns, DICOM, kill -9, shards."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casebase.db.connection import connect
from casebase.ingest.pipeline import IngestOptions, ingest

COVID_COLUMNS = "filename=study_id,patientid=patient_id,clinical_notes=report,date=study_date"


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def covid_subset(shared_data: Path, tmp_path: Path, n: int) -> Path:
    """The first n rows of the covid manifest (its own headers), images read in place."""
    src = shared_data / "covid_cxr" / "metadata.csv"
    with src.open(newline="", encoding="utf-8", errors="replace") as fh:
        rows = list(csv.reader(fh))
    out = tmp_path / f"covid_{n}.csv"
    with out.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows[: n + 1])
    return out


def snapshot(url: str) -> dict[str, object]:
    with connect(url) as conn:
        return {
            "studies": sorted(
                conn.execute(
                    "SELECT study_id, view, flags, age, sex, modality, batch FROM casebase.studies"
                ).fetchall()
            ),
            "content": sorted(
                conn.execute("SELECT study_id, content_sha256 FROM casebase.study").fetchall()
            ),
            "images": conn.execute("SELECT count(*) FROM casebase.image").fetchone()[0],
            "vectors": sorted(
                conn.execute("SELECT study_id, vec::text FROM casebase.embeddings").fetchall()
            ),
            "findings": conn.execute("SELECT count(*) FROM casebase.finding").fetchone()[0],
        }


def test_covid_set_through_columns_then_rerun_adds_nothing(use_db, shared_data):
    manifest = shared_data / "covid_cxr" / "metadata.csv"
    args = [
        "ingest",
        str(manifest),
        "--batch",
        "covid",
        "--model",
        "tiny-random",
        "--columns",
        COVID_COLUMNS,
        "--set",
        "body_part=chest",
        "--no-progress",
    ]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "rejected" in first.stdout and "loaded" in first.stdout
    with connect(use_db) as conn:
        n = conn.execute("SELECT count(*) FROM casebase.studies WHERE batch = 'covid'").fetchone()
        by_view = dict(
            conn.execute("SELECT view, count(*) FROM casebase.studies GROUP BY view").fetchall()
        )
        portable = conn.execute(
            "SELECT count(*) FROM casebase.studies WHERE 'portable' = ANY(flags)"
        ).fetchone()[0]
        modalities = dict(
            conn.execute("SELECT modality, count(*) FROM casebase.studies GROUP BY 1").fetchall()
        )
        finding_attr = conn.execute(
            "SELECT count(*) FROM casebase.studies WHERE attributes ? 'finding'"
        ).fetchone()[0]
        leaked = conn.execute(
            "SELECT count(*) FROM casebase.studies WHERE findings ~ '[0-9]+-year-old'"
        ).fetchone()[0]
    assert n[0] == 633  # 638 rows, 5 repeat an image already listed (rejected as duplicates)
    assert by_view["AP_SUPINE"] == 132 and by_view["PA"] == 293
    assert portable >= 132
    assert modalities == {"CXR": 570, "CT": 63}
    assert finding_attr == 633
    assert leaked == 0
    before = snapshot(use_db)
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "0 loaded, 633 skipped" in again.stdout
    assert snapshot(use_db) == before


def test_dicom_folder_loads_with_correct_header_values(use_db, shared_data, tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    for f in (shared_data / "dicom").glob("*.dcm"):
        (folder / f.name).write_bytes(f.read_bytes())
    summary = ingest(
        folder,
        IngestOptions(batch="dicom", model="tiny-random", workers=0, progress=False),
        url=use_db,
    )
    assert summary.rejected == 0
    with connect(use_db) as conn:
        rows = conn.execute(
            "SELECT s.modality, s.sex, s.age, s.view, s.n_images FROM casebase.studies s "
            "WHERE batch = 'dicom' ORDER BY s.age"
        ).fetchall()
    # The SIIM file and its MONOCHROME1 copy share one StudyInstanceUID: one study, 2 images.
    assert rows == [("CXR", "F", 5.0, None, 1), ("CXR", "M", 62.0, "PA", 2)]


def _ingest_cmd(manifest: Path, batch: str) -> list[str]:
    root = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covid_cxr")
    return [
        sys.executable,
        "-m",
        "casebase.cli",
        "ingest",
        str(manifest),
        "--batch",
        batch,
        "--model",
        "tiny-random",
        "--columns",
        COVID_COLUMNS,
        "--set",
        "body_part=chest",
        "--no-progress",
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--chunk-size",
        "4",
        "--images-root",
        root,
    ]


def test_kill_minus_9_then_rerun_equals_uninterrupted(server_url, shared_data, tmp_path):
    from tests.conftest import drop_database, make_database

    manifest = covid_subset(shared_data, tmp_path, 200)  # long enough to be killed midway
    killed_url = make_database(server_url, "t_ingest_killed")
    clean_url = make_database(server_url, "t_ingest_clean")
    try:
        env = {**os.environ, "DATABASE_URL": killed_url}
        proc = subprocess.Popen(
            _ingest_cmd(manifest, "b1"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        loaded = 0
        while time.time() < deadline and proc.poll() is None:
            with connect(killed_url) as conn:
                loaded = conn.execute("SELECT count(*) FROM casebase.study").fetchone()[0]
            if loaded >= 8:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "ingest finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with connect(killed_url) as conn:
            partial = conn.execute("SELECT count(*) FROM casebase.study").fetchone()[0]
            half = conn.execute(
                "SELECT count(*) FROM casebase.study s WHERE NOT EXISTS "
                "(SELECT 1 FROM casebase.embedding e WHERE e.study_pk = s.study_pk)"
            ).fetchone()[0]
        assert 0 < partial < 200 and half == 0
        rerun = subprocess.run(
            _ingest_cmd(manifest, "b1"), env=env, capture_output=True, text=True, timeout=600
        )
        assert rerun.returncode == 0, rerun.stderr
        assert f"{partial} skipped" in rerun.stdout
        clean = subprocess.run(
            _ingest_cmd(manifest, "b1"),
            env={**os.environ, "DATABASE_URL": clean_url},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert clean.returncode == 0, clean.stderr
        assert snapshot(killed_url) == snapshot(clean_url)
        with connect(killed_url) as conn:
            status = conn.execute("SELECT status FROM casebase.batches").fetchone()[0]
        assert status == "complete"
    finally:
        drop_database(server_url, "t_ingest_killed")
        drop_database(server_url, "t_ingest_clean")


def test_two_shards_load_disjoint_halves_and_complete_the_batch(server_url, shared_data, tmp_path):
    from tests.conftest import drop_database, make_database

    manifest = covid_subset(shared_data, tmp_path, 40)
    url = make_database(server_url, "t_ingest_shards")
    try:
        opts = {
            "batch": "sharded",
            "model": "tiny-random",
            "workers": 0,
            "progress": False,
            "columns": dict(p.split("=") for p in COVID_COLUMNS.split(",")),
            "defaults": {"body_part": "chest"},
            "images_root": str(shared_data / "covid_cxr"),
        }
        first = ingest(manifest, IngestOptions(shard=(0, 2), **opts), url=url)
        assert not first.complete
        second = ingest(manifest, IngestOptions(shard=(1, 2), **opts), url=url)
        assert second.complete
        assert first.loaded > 0 and second.loaded > 0
        with connect(url) as conn:
            total = conn.execute("SELECT count(*) FROM casebase.study").fetchone()[0]
            status = conn.execute("SELECT status FROM casebase.batches").fetchone()[0]
        assert total == first.loaded + second.loaded
        assert status == "complete"
    finally:
        drop_database(server_url, "t_ingest_shards")


@pytest.mark.parametrize("shard", ["3/2", "x", "1/0"])
def test_bad_shard_is_a_clear_error(shard):
    from casebase.errors import InputError
    from casebase.ingest.pipeline import parse_shard

    with pytest.raises(InputError, match="--shard"):
        parse_shard(shard)
