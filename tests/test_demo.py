"""`casebase demo` end to end (small cohort), its re-run, and its bad environments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import drop_database, make_database


@pytest.fixture()
def demo_env(server_url, tmp_path, monkeypatch):
    url = make_database(server_url, "t_demo", migrate=False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CASEBASE_HOME", str(tmp_path / "home"))
    yield url
    drop_database(server_url, "t_demo")


def test_demo_runs_end_to_end_and_reruns_without_redoing_work(demo_env, tmp_path):
    from casebase.commands.demo import run_demo

    lines: list[str] = []
    sheet = run_demo(lines.append, n_chest=70, n_knee=10, train_minutes=0.1)
    text = "\n".join(lines)
    assert "no pretrained weights for clip-vit-b-32" in text
    assert "before training" in text and "after training (demo-trained)" in text
    assert "most similar cases" in text and "not a diagnosis" in text.lower()
    assert "SELECT rank, study_id" in text and 'psql "' in text
    assert Path(sheet).is_file() and Path(sheet).stat().st_size > 10_000

    again: list[str] = []
    run_demo(again.append, n_chest=70, n_knee=10, train_minutes=0.1)
    rerun = "\n".join(again)
    assert "0 loaded, 80 skipped" in rerun
    assert "training skipped" in rerun
    assert "added=0" in rerun


def _cli(*args: str, env: dict[str, str]):
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", *args],
        capture_output=True,
        text=True,
        env={**full, **env},
        timeout=300,
    )


def test_demo_where_the_server_cannot_start_says_how_to_fix_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "pg").write_text("not a data folder")
    result = _cli("demo", env={"CASEBASE_HOME": str(home)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "did not start" in result.stderr and "Fix:" in result.stderr


def test_stale_schema_says_run_db_upgrade(server_url):
    from casebase.db import migrate

    url = make_database(server_url, "t_stale", migrate=False)
    try:
        migrate.upgrade(url, "0001")
        result = _cli("search", "--study", "X", env={"DATABASE_URL": url})
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "schema is at revision 0001" in result.stderr
        assert "run `casebase db upgrade`" in result.stderr
    finally:
        drop_database(server_url, "t_stale")
