"""Two processes at once (issue 12): two ingests of one batch, two shards, two batches
that hold the same studies, two ``casebase db upgrade``. Each test starts real ``casebase``
processes together; the data stays consistent and nobody dies with a traceback.

Before: the loser of two ingests of one batch, or of two upgrades, died with a raw
UniqueViolation (duplicate key) traceback.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image

from tests.conftest import REPO, drop_database, make_database

N_STUDIES = 64


def _manifest(folder: Path, size: int) -> Path:
    """N studies of one noise image of ``size``² (each row its own study)."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(folder / "image.png")
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "image_path", "patient_id", "modality", "body_part", "report"])
        for i in range(N_STUDIES):
            w.writerow([f"C-{i:03d}", "image.png", f"P-{i % 7}", "CR", "CHEST", "FINDINGS: Clear."])
    return path


@pytest.fixture(scope="module")
def slow_manifest(tmp_path_factory) -> Path:
    """Slow to decode (2048², ~65 ms an image): the first run holds its lock for seconds."""
    return _manifest(tmp_path_factory.mktemp("concurrent_slow"), 2048)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return _manifest(tmp_path_factory.mktemp("concurrent"), 256)


@pytest.fixture()
def fresh_db(server_url: str):
    url = make_database(server_url, "t_concurrency")
    yield url
    drop_database(server_url, "t_concurrency")


def start(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "casebase.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(REPO)},
    )


def ingest_args(manifest: Path, batch: str, *extra: str) -> list[str]:
    return ["ingest", str(manifest), "--batch", batch, "--model", "tiny-random",
            "--workers", "0", "--chunk-size", "8", "--no-progress", *extra]  # fmt: skip


def together(*procs: subprocess.Popen) -> list[tuple[int, str, str]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        out.append((proc.returncode, stdout, stderr))
    return out


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def assert_each_study_once(url: str) -> None:
    assert query(url, "SELECT count(*), count(DISTINCT study_id) FROM casebase.study") == [
        (N_STUDIES, N_STUDIES)
    ]
    assert query(url, "SELECT count(*) FROM casebase.embedding") == [(N_STUDIES,)]
    half = query(
        url,
        "SELECT s.study_id FROM casebase.study s WHERE NOT EXISTS "
        "(SELECT 1 FROM casebase.embedding e WHERE e.study_pk = s.study_pk)",
    )
    assert half == []


def test_a_second_run_of_one_batch_says_busy_in_one_line(fresh_db, slow_manifest) -> None:
    results = together(
        start(fresh_db, *ingest_args(slow_manifest, "2026-11")),
        start(fresh_db, *ingest_args(slow_manifest, "2026-11")),
    )
    codes = sorted(code for code, _, _ in results)
    report = "\n".join(f"exit {c}\n{o}\n{e[-2000:]}" for c, o, e in results)
    assert codes == [0, 1], report
    [(_, winner, _)] = [r for r in results if r[0] == 0]
    [(_, _, loser)] = [r for r in results if r[0] == 1]
    assert f"{N_STUDIES} loaded, 0 skipped" in winner, report
    assert "Traceback" not in loser, report
    assert loser.strip().splitlines()[-1] == (
        "casebase: error: batch 2026-11 is being loaded by another process; nothing was "
        "written (run it again when that one has finished)"
    ), report
    assert_each_study_once(fresh_db)
    assert query(fresh_db, "SELECT count(*) FROM casebase.rejects") == [(0,)]
    [(status, shards)] = query(fresh_db, "SELECT status, stats -> 'shards' FROM casebase.batches")
    assert status == "complete" and list(shards) == ["0/1"], shards


def test_shards_of_one_batch_still_run_side_by_side(fresh_db, manifest) -> None:
    results = together(
        start(fresh_db, *ingest_args(manifest, "sharded", "--shard", "0/2")),
        start(fresh_db, *ingest_args(manifest, "sharded", "--shard", "1/2")),
    )
    report = "\n".join(f"exit {c}\n{o}\n{e[-2000:]}" for c, o, e in results)
    assert [code for code, _, _ in results] == [0, 0], report
    assert_each_study_once(fresh_db)
    assert query(fresh_db, "SELECT status FROM casebase.batches") == [("complete",)]


def test_two_batches_holding_the_same_studies_load_each_once(fresh_db, manifest) -> None:
    """The per-batch lock does not cover this: the writer does. A study the other run
    committed first is skipped (same content), whether before this run looked or while
    its chunk was being written."""
    results = together(
        start(fresh_db, *ingest_args(manifest, "a")),
        start(fresh_db, *ingest_args(manifest, "b")),
    )
    report = "\n".join(f"exit {c}\n{o}\n{e[-2000:]}" for c, o, e in results)
    assert [code for code, _, _ in results] == [0, 0], report
    assert not any("Traceback" in e for _, _, e in results), report
    assert_each_study_once(fresh_db)
    per_batch = dict(query(fresh_db, "SELECT batch, count(*) FROM casebase.study GROUP BY 1"))
    assert sum(per_batch.values()) == N_STUDIES, per_batch
    for _, stdout, _ in results:
        batch = stdout.split()[1]
        loaded = per_batch.get(batch, 0)
        assert f"{loaded} loaded, {N_STUDIES - loaded} skipped" in stdout, report
    assert query(fresh_db, "SELECT count(*) FROM casebase.rejects") == [(0,)]


def test_two_upgrades_at_once_both_succeed(server_url: str) -> None:
    from casebase.db.migrate import current_revision, head_revision

    url = make_database(server_url, "t_concurrent_upgrade", migrate=False)
    try:
        results = together(start(url, "db", "upgrade"), start(url, "db", "upgrade"))
        report = "\n".join(f"exit {c}\n{o}\n{e[-3000:]}" for c, o, e in results)
        assert [code for code, _, _ in results] == [0, 0], report
        assert not any("Traceback" in e or "error" in e for _, _, e in results), report
        assert all("schema upgraded to head" in o for _, o, _ in results), report
        with psycopg.connect(url) as conn:
            assert current_revision(conn) == head_revision()
            salts = conn.execute(
                "SELECT count(*) FROM casebase.setting WHERE key = 'patient_salt'"
            ).fetchone()
        assert salts == (1,)
    finally:
        drop_database(server_url, "t_concurrent_upgrade")
