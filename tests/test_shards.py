"""Parallel ingest workers: N real `casebase ingest --shard I/N` processes on one batch,
started together, into one database; and one of them killed with SIGKILL and re-run alone.

What must hold: every study of the batch loaded exactly once (0 duplicates, 0 missing,
each whole: its image, vector and report), the batch ``complete`` only once the last
shard has finished, and a killed shard that finishes when re-run with no duplicate.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casebase.db.connection import connect
from casebase.ingest.pipeline import in_shard
from tests.conftest import drop_database, make_database

N = 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from casebase.cohort import generate

    return generate(tmp_path_factory.mktemp("shards"), n_chest=72, n_knee=18, seed=11)


@pytest.fixture()
def fresh_db(server_url: str, request):
    name = "t_shards_" + request.node.name[5:30]
    url = make_database(server_url, name)
    yield url
    drop_database(server_url, name)


def study_ids(manifest: Path) -> list[str]:
    with manifest.open(newline="") as fh:
        return sorted({row["study_id"] for row in csv.DictReader(fh)})


def start_shard(manifest: Path, url: str, i: int, *, step: int = 8) -> subprocess.Popen:
    """One `casebase ingest` process; ``step`` images per model batch and studies per
    commit (the writer commits what is ready, so a batch of 32 is one transaction)."""
    argv = [sys.executable, "-m", "casebase.cli", "ingest", str(manifest), "--batch", "b"]
    argv += ["--model", "tiny-random", "--shard", f"{i}/{N}", "--workers", "0"]
    argv += ["--batch-size", str(step), "--chunk-size", str(step), "--json", "--no-progress"]
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def loaded_rows(url: str) -> dict[str, int]:
    """Whole studies only: each with its image and its vector (the cohort has one each)."""
    with connect(url) as conn:
        row = conn.execute(
            """
            SELECT (SELECT count(*) FROM casebase.study WHERE batch = 'b'),
                   (SELECT count(DISTINCT study_id) FROM casebase.study WHERE batch = 'b'),
                   (SELECT count(*) FROM casebase.image i JOIN casebase.study s USING (study_pk)
                     WHERE s.batch = 'b'),
                   (SELECT count(*) FROM casebase.embedding WHERE batch = 'b'),
                   (SELECT count(*) FROM casebase.study s WHERE s.batch = 'b' AND NOT EXISTS (
                      SELECT 1 FROM casebase.embedding e WHERE e.study_pk = s.study_pk))
            """
        ).fetchone()
    assert row is not None
    return dict(
        zip(("studies", "distinct", "images", "vectors", "without_vector"), row, strict=True)
    )


def loaded_ids(url: str) -> list[str]:
    with connect(url) as conn:
        rows = conn.execute("SELECT study_id FROM casebase.study WHERE batch = 'b'").fetchall()
    return sorted(r[0] for r in rows)


def batch_row(url: str) -> tuple[str, list[str]]:
    with connect(url) as conn:
        status, shards = conn.execute(
            "SELECT status, stats -> 'shards' FROM casebase.batches WHERE batch = 'b'"
        ).fetchone()
    return status, sorted(shards or {})


def test_three_shards_started_together_load_each_study_once(manifest: Path, fresh_db: str):
    want = study_ids(manifest)
    procs = [start_shard(manifest, fresh_db, i) for i in range(N)]
    summaries = [finish(p) for p in procs]
    counts = loaded_rows(fresh_db)
    assert counts == {
        "studies": len(want),
        "distinct": len(want),
        "images": len(want),
        "vectors": len(want),
        "without_vector": 0,
    }, counts
    assert loaded_ids(fresh_db) == want  # 0 missing, 0 extra
    assert sum(s["loaded"] for s in summaries) == len(want), summaries
    for i, s in enumerate(summaries):  # each loaded its own shard, and nothing else
        assert s["loaded"] == sum(in_shard(sid, (i, N)) for sid in want), (i, s)
    # The one that finished last (finish_batch runs under a row lock) completed it.
    assert [s["complete"] for s in summaries].count(True) == 1, summaries
    assert batch_row(fresh_db) == ("complete", ["0/3", "1/3", "2/3"])


def test_a_killed_shard_leaves_the_batch_incomplete_and_finishes_alone(
    manifest: Path, fresh_db: str
):
    want = study_ids(manifest)
    mine = [sid for sid in want if in_shard(sid, (1, N))]
    # Shard 1 embeds and commits about one study at a time: there is time to kill it
    # half way, as soon as its first studies are in.
    procs = [start_shard(manifest, fresh_db, i, step=1 if i == 1 else 8) for i in range(N)]
    deadline = time.monotonic() + 240
    with connect(fresh_db, autocommit=True) as conn:
        while procs[1].poll() is None and time.monotonic() < deadline:
            done = conn.execute(
                "SELECT count(*) FROM casebase.study WHERE study_id = ANY(%s)", (mine,)
            ).fetchone()[0]
            if done >= 1:
                procs[1].send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    assert procs[1].returncode is None or procs[1].returncode == -signal.SIGKILL
    procs[1].communicate(timeout=60)
    others = [finish(procs[0]), finish(procs[2])]
    assert not any(s["complete"] for s in others), others
    status, shards = batch_row(fresh_db)
    assert status != "complete" and shards == ["0/3", "2/3"], (status, shards)
    partial = set(loaded_ids(fresh_db)) & set(mine)
    assert procs[1].returncode == -signal.SIGKILL, "shard 1 ended before it could be killed"
    assert 1 <= len(partial) < len(mine), (len(partial), len(mine))
    assert loaded_rows(fresh_db)["without_vector"] == 0  # no half-written study

    rerun = finish(start_shard(manifest, fresh_db, 1))
    assert rerun["complete"] is True, rerun
    assert rerun["skipped"] == len(partial) and rerun["loaded"] == len(mine) - len(partial)
    counts = loaded_rows(fresh_db)
    assert counts["studies"] == counts["distinct"] == counts["vectors"] == len(want), counts
    assert loaded_ids(fresh_db) == want
    assert batch_row(fresh_db) == ("complete", ["0/3", "1/3", "2/3"])
