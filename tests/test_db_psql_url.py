"""`casebase db psql` and `casebase db url [--start]`, through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from casebase.db.connection import connect
from casebase.db.psql import find_psql, psql_call
from casebase.errors import DatabaseError


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", *args],
        capture_output=True,
        text=True,
        env={**full, **env},
        timeout=120,
    )


def test_psql_runs_a_command_on_the_casebase_database(use_db):
    result = cli(
        "db", "psql", "-At", "-c", "SELECT current_database()", env={"DATABASE_URL": use_db}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t_test_db_psql_url"


def test_psql_exit_status_and_views(use_db):
    views = cli("db", "psql", "-c", r"\dv casebase.*", env={"DATABASE_URL": use_db})
    assert views.returncode == 0 and " studies " in views.stdout, views.stderr
    bad = cli("db", "psql", "-v", "ON_ERROR_STOP=1", "-c", "SELEC 1", env={"DATABASE_URL": use_db})
    assert bad.returncode != 0 and "syntax error" in bad.stderr


def test_psql_is_the_wheels_and_the_password_stays_off_its_command_line(tmp_path):
    assert find_psql().parent.parent.name == "pginstall"
    fake = tmp_path / "psql"
    call = psql_call(
        "postgresql://u:p%40ss@db.example:5433/cb?sslmode=require", ["-c", "x"], psql=fake
    )
    assert call.argv == [
        str(fake),
        "-d",
        "postgresql://u@db.example:5433/cb?sslmode=require",
        "-c",
        "x",
    ]
    assert call.env["PGPASSWORD"] == "p@ss"
    plain = psql_call("postgresql://postgres@/casebase?host=/tmp/s", [], psql=fake)
    assert plain.argv == [str(fake), "-d", "postgresql://postgres@/casebase?host=/tmp/s"]


def test_no_psql_is_a_one_line_error(tmp_path):
    with pytest.raises(DatabaseError, match=r"^no psql found: .* install PostgreSQL's client"):
        find_psql([tmp_path], path=str(tmp_path))


def test_url_does_not_start_a_server_unless_asked(tmp_path, casebase_home):
    env = {"CASEBASE_HOME": str(tmp_path / "home")}
    data_dir = Path(env["CASEBASE_HOME"]) / "pg"
    refused = cli("db", "url", env=env)
    assert refused.returncode == 1 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "not running: run `casebase db start`" in lines[0] and "--start" in lines[0]
    assert not (data_dir / "PG_VERSION").exists()  # nothing was created, let alone started
    try:
        started = cli("db", "url", "--start", env=env)
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        with connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("casebase",)
        again = cli("db", "url", env=env)
        assert again.returncode == 0 and again.stdout.strip() == url
    finally:
        cli("db", "stop", env=env)
