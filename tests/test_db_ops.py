"""Operating the embedded server: odd home paths, unusable homes, a server that goes away.

Each test that needs a server starts its own under ``tmp_path`` (never the session's,
which other tests use), and stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from casebase.config import load_settings
from casebase.db import embedded, postmaster
from casebase.db.connection import checked_url, connect
from casebase.db.lost import LOST
from casebase.errors import ConfigError, DatabaseError

# Shell-special on purpose: a space, both quotes and a "$" (pg_ctl pastes paths into /bin/sh).
ODD = Path("with space") / 'it\'s "q" $x' / "casebase home"


@pytest.fixture(scope="module")
def odd_home(tmp_path_factory) -> Iterator[Path]:
    """A server of this module's own, under a home whose path needs quoting."""
    home = tmp_path_factory.mktemp("odd") / ODD
    yield home
    embedded.stop(home / "pg")


def _socket_host(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["host"]


def test_home_with_spaces_and_quotes_starts_reconnects_and_stops(odd_home: Path) -> None:
    data_dir = odd_home / "pg"
    url = checked_url(load_settings({"CASEBASE_HOME": str(odd_home)}))
    assert "%20" in url and " " not in url, url  # percent-encoded: psql accepts it too
    socket = Path(_socket_host(url))
    if len(str(data_dir / ".s.PGSQL.5432")) < 100:  # else the wheel's short fallback dir
        assert socket == data_dir, socket  # the quoted path itself holds the socket
    with connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database(), current_setting('data_directory')")
        assert row.fetchone() == ("casebase", str(data_dir))
    status = embedded.status(data_dir)
    assert status.running and status.url == url and status.pid is not None
    assert embedded.stop(data_dir) is True
    assert not embedded.status(data_dir).running and embedded.stop(data_dir) is False
    # Started again (no initdb this time), it answers on the same URL.
    assert embedded.start(data_dir) == url
    with connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_socket_folder_quoting_and_comma_fallback(tmp_path: Path) -> None:
    assert postmaster.guc_list_item(Path('/a b/c,"d"')) == '"/a b/c,""d"""'
    odd = Path('/tmp/it\'s a "home" $x/pg')
    assert _socket_host(embedded.url(odd)) == str(odd)
    # libpq reads host as a comma-separated list: such a data folder gets another socket dir.
    comma = tmp_path / "a,b" / "pg"
    comma.mkdir(parents=True)
    chosen = postmaster.socket_dir(comma, None)
    assert "," not in str(chosen) and chosen.is_dir()


# --- a home that cannot be used -----------------------------------------------------------


def _homes(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name → (home, what the message must name). Tests run as root, so "cannot write"
    is a path root cannot create either: under a regular file, or in sysfs."""
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    return {
        "home is a file": (a_file, f"{a_file} is a file, not a folder"),
        "parent is a file": (a_file / "casebase home", f"{a_file} is a file, not a folder"),
        "not permitted": (Path("/sys/casebase-test-home"), "/sys/casebase-test-home"),
    }


@pytest.mark.parametrize("case", ["home is a file", "parent is a file", "not permitted"])
def test_unusable_home_is_one_line_from_the_library(tmp_path: Path, case: str) -> None:
    home, named = _homes(tmp_path)[case]
    with pytest.raises(ConfigError) as err:
        checked_url(load_settings({"CASEBASE_HOME": str(home)}))
    message = str(err.value)
    assert "\n" not in message and named in message, message
    assert message.startswith(f"cannot use {home} as the casebase home")
    assert "set CASEBASE_HOME to a folder this user can write" in message
    assert not (tmp_path / "not-a-folder").is_dir()  # nothing was replaced
    assert embedded.stop(home / "pg") is False  # stopping creates nothing either


@pytest.mark.parametrize("case", ["home is a file", "not permitted"])
def test_unusable_home_is_one_line_from_the_cli(tmp_path: Path, case: str) -> None:
    home, named = _homes(tmp_path)[case]
    env = {**os.environ, "CASEBASE_HOME": str(home), "PYTHONPATH": os.getcwd()}
    env.pop("DATABASE_URL", None)
    env.pop("CASEBASE_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "casebase.cli", "db", "start"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("casebase: error: cannot use ") and named in line, line
    assert "CASEBASE_HOME" in line


# --- the server goes away under a live connection -----------------------------------------


@pytest.mark.parametrize("where", ["execute", "commit", "copy", "transaction"])
def test_server_stopped_under_a_connection_is_one_line(odd_home: Path, where: str) -> None:
    data_dir = odd_home / "pg"
    url = embedded.start(data_dir)
    conn = connect(url)
    try:
        conn.execute("CREATE TEMP TABLE t (x int)")
        assert embedded.stop(data_dir) is True
        with pytest.raises(DatabaseError) as err:
            if where == "execute":
                conn.execute("SELECT 1")
            elif where == "commit":
                conn.commit()
            elif where == "copy":
                with conn.cursor() as cur, cur.copy("COPY t FROM STDIN") as copy:
                    copy.write_row((1,))
            else:
                with conn.transaction():
                    conn.execute("INSERT INTO t VALUES (1)")
        # The dead connection stays one line on its next use, not "connection is closed".
        with pytest.raises(DatabaseError, match="closed the connection") as again:
            conn.execute("SELECT 1")
        assert "the connection is closed" in str(again.value)
    finally:
        conn.close()
    message = str(err.value)
    assert message.startswith(LOST) and "\n" not in message, message
    assert "run `casebase db start`" in message and "AdminShutdown" in message
    assert isinstance(err.value.__cause__, psycopg.errors.AdminShutdown)


def test_other_operational_errors_pass_unchanged(odd_home: Path) -> None:
    """A cancelled statement is not a lost connection: callers catch it by its type."""
    url = embedded.start(odd_home / "pg")
    with connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 50")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(2)")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # still usable
