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


FULL_ROWS = {
    "image": "SELECT s.study_id, i.uri, i.sha256, i.size_bytes, i.width, i.height, i.view, "
    "i.flags, i.quality::text FROM casebase.image i JOIN casebase.study s USING (study_pk)",
    "report": "SELECT s.study_id, r.findings, r.impression, r.removed "
    "FROM casebase.report r JOIN casebase.study s USING (study_pk)",
    "finding": "SELECT s.study_id, f.finding, f.status, f.backend, f.version, f.evidence, "
    "f.location::text FROM casebase.finding f JOIN casebase.study s USING (study_pk)",
    "embedding": "SELECT study_id, image_pk IS NOT NULL, flags, view, vec::text "
    "FROM casebase.embedding",
}


def full_rows(url: str) -> dict[str, list]:
    with connect(url) as conn:
        return {k: sorted(conn.execute(q).fetchall()) for k, q in FULL_ROWS.items()}


def test_decode_workers_store_what_the_plain_path_computes(server_url, shared_data, tmp_path):
    """Workers (decode, hash, quality, report sanitising and labelling) store the same rows
    as in-process decoding, and those are what load_image + measure_quality +
    sanitize_report + labelled_findings give when called directly."""
    import hashlib
    import json

    from casebase.imaging.images import load_image
    from casebase.imaging.quality import measure_quality
    from casebase.ingest.sanitize import sanitize_report
    from casebase.synthesis.evidence import labelled_findings
    from tests.conftest import drop_database, make_database

    manifest = covid_subset(shared_data, tmp_path, 48)
    opts = {
        "model": "tiny-random",
        "progress": False,
        "batch_size": 8,
        "chunk_size": 16,
        "columns": dict(p.split("=") for p in COVID_COLUMNS.split(",")),
        "defaults": {"body_part": "chest"},
        "images_root": str(shared_data / "covid_cxr"),
    }
    urls = {w: make_database(server_url, f"t_ingest_workers_{w}") for w in (0, 2)}
    try:
        for workers, url in urls.items():
            summary = ingest(manifest, IngestOptions(batch="w", workers=workers, **opts), url=url)
            assert summary.loaded > 40, summary
        rows = full_rows(urls[0])
        assert rows == full_rows(urls[2])
        assert rows["finding"], "the covid notes mention findings"
        for _, uri, sha, size, width, height, _, _, quality in rows["image"]:
            data = Path(uri).read_bytes()
            assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
            image = load_image(uri)
            assert (width, height) == image.size
            assert json.loads(quality) == measure_quality(image).as_dict()
        with connect(urls[0]) as conn:
            raw = dict(
                conn.execute(
                    "SELECT study_id, raw_text FROM casebase.study s JOIN casebase.report_raw "
                    "USING (study_pk)"
                ).fetchall()
            )
        expected = []
        for study_id, text in raw.items():
            clean = sanitize_report(report=text)
            for f in labelled_findings(clean.findings, clean.impression):
                expected.append((study_id, f.finding, f.status, f.evidence))
        assert sorted(expected) == sorted((r[0], r[1], r[2], r[5]) for r in rows["finding"])
    finally:
        for w in urls:
            drop_database(server_url, f"t_ingest_workers_{w}")


def test_a_failing_chunk_write_stops_the_batch_with_its_error(
    server_url, shared_data, tmp_path, monkeypatch
):
    """Chunks are written by a thread while the model runs: its error still reaches the
    caller, what was committed before it is whole studies only, the batch says it
    failed and why (not 'running' for ever), and a re-run finishes it."""
    from casebase.ingest import load
    from tests.conftest import drop_database, make_database

    real = load.write_chunk
    calls = []

    def failing(conn, **kwargs):
        calls.append(len(kwargs["studies"]))
        if len(calls) == 2:
            raise RuntimeError("disk full (simulated)")
        return real(conn, **kwargs)

    monkeypatch.setattr(load, "write_chunk", failing)
    manifest = covid_subset(shared_data, tmp_path, 24)
    url = make_database(server_url, "t_ingest_writer_error")
    try:
        options = IngestOptions(
            batch="w",
            model="tiny-random",
            workers=0,
            progress=False,
            batch_size=4,
            chunk_size=4,
            columns=dict(p.split("=") for p in COVID_COLUMNS.split(",")),
            defaults={"body_part": "chest"},
            images_root=str(shared_data / "covid_cxr"),
        )
        with pytest.raises(RuntimeError, match="disk full"):
            ingest(manifest, options, url=url)
        with connect(url) as conn:
            studies = conn.execute("SELECT count(*) FROM casebase.study").fetchone()[0]
            half = conn.execute(
                "SELECT count(*) FROM casebase.study s WHERE NOT EXISTS "
                "(SELECT 1 FROM casebase.embedding e WHERE e.study_pk = s.study_pk)"
            ).fetchone()[0]
        assert studies == calls[0] and half == 0
        with connect(url) as conn:
            status = conn.execute("SELECT status, error FROM casebase.batches").fetchone()
        assert status == ("failed", "RuntimeError: disk full (simulated)"), status
        monkeypatch.undo()
        again = ingest(manifest, options, url=url)
        assert again.complete and again.skipped == calls[0], again
        with connect(url) as conn:
            status = conn.execute("SELECT status, error FROM casebase.batches").fetchone()
        assert status == ("complete", None), status
    finally:
        drop_database(server_url, "t_ingest_writer_error")


def test_quality_filter_is_the_sliding_window_filter() -> None:
    """The shifted-views min/max filter equals the plain sliding-window definition."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    from casebase.imaging.quality import _filter

    def reference(arr, size, reduce):
        pad = size // 2
        rows = np.pad(arr, ((0, 0), (pad, pad)), mode="edge")
        rows = reduce.reduce(sliding_window_view(rows, size, axis=1), axis=-1)
        cols = np.pad(rows, ((pad, pad), (0, 0)), mode="edge")
        return reduce.reduce(sliding_window_view(cols, size, axis=0), axis=-1)

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (2, 9), (7, 3), (64, 51), (256, 256)]:
        arr = rng.integers(0, 256, shape).astype(np.float32)
        for size in (1, 3, 5):
            for reduce in (np.minimum, np.maximum):
                got = _filter(arr, size, reduce)
                np.testing.assert_array_equal(got, reference(arr, size, reduce))


def test_decode_reads_each_file_once_with_load_images_reasons(tmp_path, shared_data):
    """decode_image hashes and decodes the same bytes; bad files fail as load_image does."""
    import hashlib

    from PIL import Image

    from casebase.errors import InputError
    from casebase.imaging.images import load_image
    from casebase.ingest.decode import decode_image
    from casebase.ingest.studies import ImageInput

    def item(path):
        return (ImageInput(path, "m.csv", "line 2", None, ()), "CXR")

    grey_rgb = tmp_path / "grey_rgb.png"
    Image.new("L", (40, 30), 90).convert("RGB").save(grey_rgb)
    colour = tmp_path / "colour.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(colour)
    covid = sorted((shared_data / "covid_cxr" / "images").glob("*.jp*g"))[:3]
    for path in [grey_rgb, colour, *covid]:
        image, facts = decode_image(item(path))
        rgb = load_image(path)
        assert facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert image.convert("RGB").tobytes() == rgb.tobytes()
    assert decode_image(item(grey_rgb))[0].mode == "L"
    assert decode_image(item(colour))[0].mode == "RGB"
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("FINDINGS: none\n")
    for bad in ("empty.png", "notes.png", "gone.png", "."):
        path = tmp_path / bad
        with pytest.raises(InputError) as expected:
            load_image(path)
        with pytest.raises(InputError) as got:
            decode_image(item(path))
        assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("shard", ["3/2", "x", "1/0"])
def test_bad_shard_is_a_clear_error(shard):
    from casebase.errors import InputError
    from casebase.ingest.pipeline import parse_shard

    with pytest.raises(InputError, match="--shard"):
        parse_shard(shard)
