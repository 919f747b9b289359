"""Read replicas: hot standbys made and run with PostgreSQL's own streaming replication.

``casebase db replica create DIR [--from URL]`` copies the primary (the embedded server,
or any PostgreSQL 18 with a replication-capable login) with ``pg_basebackup -R -X stream
-C -S casebase_<name>`` into DIR and starts it there as a hot standby on a Unix socket of
its own (no TCP listener). Nothing of it is casebase's own machinery: the copy, the WAL
stream, the replay and the promotion are PostgreSQL's; casebase picks the options,
records the replica (``replica_registry.py``) and turns failures into one line.

What each operation guarantees (README, "Read replicas"):

- ``create`` returns once the standby accepts read-only connections and its WAL receiver
  is streaming: every database of the primary, as of the end of the copy, then every
  later commit, replayed in commit order (asynchronously: a moment behind). Its physical
  replication slot makes the primary keep every WAL segment the standby has not yet
  received, so a standby that was stopped (or killed) catches up when started again; the
  price is WAL kept on the primary, which ``list`` shows and ``drop`` frees.
- ``stop`` is a fast shutdown; the slot stays. ``start`` starts it again, and it catches up.
- ``promote`` ends recovery (``pg_promote``): the replica becomes a primary that accepts
  writes, holding every transaction it had replayed; commits the old primary made that
  it had not replayed are not on it (``promote`` prints how many bytes of WAL that was).
  The slot on the old primary is dropped. casebase does not stop or fence the old
  primary: stop writing to it first.
- ``drop`` stops the replica, drops its slot on the primary and forgets it; its data
  folder stays on disk.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from casebase.config import Settings, load_settings
from casebase.db import postmaster
from casebase.db.connection import connect, database_url, libpq_url, redact
from casebase.db.replica_registry import Registry, ReplicaRecord, check_name, name_for, slot_for
from casebase.db.replica_state import (
    ReplicaState,
    behind,
    last_log_line,
    replica_url,
    running,
    state,
)
from casebase.db.replication import Replay, current_lsn, wait_for_replay
from casebase.errors import DatabaseError, InputError

log = logging.getLogger(__name__)

STREAMING_TIMEOUT_S = 60.0
#: Set on every standby: it tells the primary which rows its queries still see, so that
#: vacuum on the primary does not cancel a long search on the standby.
STANDBY_SETTINGS = {"hot_standby_feedback": "on"}


# --- making one ---------------------------------------------------------------------------


def create(
    data_dir: str | Path,
    *,
    source_url: str | None = None,
    name: str | None = None,
    settings: Settings | None = None,
) -> ReplicaState:
    """Copy the primary into ``data_dir`` and start it as a streaming hot standby."""
    settings = settings or load_settings()
    target = Path(data_dir).expanduser().resolve()
    name = check_name(name or name_for(target))
    source = libpq_url(source_url) if source_url else database_url(settings)
    registry = Registry(settings.home)
    with registry.locked():
        _check_target(registry, target, name)
        database = _check_source(source)
        record = ReplicaRecord(
            name=name,
            data_dir=target,
            source_url=source,
            database=database,
            slot=slot_for(name),
            created=_now(),
        )
        created_dir = not target.exists()
        try:
            _base_backup(record)
            _prepare_standby(target)
            registry.save(record)
        except BaseException:
            _undo(record, created_dir)
            raise
    return start(name, settings=settings)


def _check_target(registry: Registry, target: Path, name: str) -> None:
    if registry.named(name) is not None:
        raise InputError(f"a replica named {name!r} exists: choose another with --name")
    known = registry.at(target)
    if known is not None:
        raise InputError(
            f"{target} is replica {known.name!r} already: `casebase db replica start {known.name}`"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target} is not an empty folder: pg_basebackup needs a new or empty one")


def _check_source(source: str) -> str:
    """Refuse, in one line each, a primary that cannot feed a standby; return its
    database name (the one casebase's URLs for the replica name)."""
    with connect(source, autocommit=True, register=False) as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('wal_level'), "
            "current_setting('max_wal_senders')::int, "
            "(SELECT count(*) FROM pg_stat_replication), "
            "current_setting('max_replication_slots')::int, "
            "(SELECT count(*) FROM pg_replication_slots), "
            "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), "
            "current_user, current_setting('server_version_num')::int / 10000"
        ).fetchone()
    assert row is not None
    database, wal_level, senders, used, slots, slots_used, can, user, major = row
    fix = "on the primary, then restart it"
    if wal_level == "minimal":
        raise DatabaseError(f"the primary has wal_level=minimal: set wal_level=replica {fix}")
    if used >= senders:
        raise DatabaseError(
            f"the primary's {senders} WAL senders are all in use: raise max_wal_senders {fix}"
        )
    if slots_used >= slots:
        raise DatabaseError(
            f"the primary's {slots} replication slots are all taken: raise "
            f"max_replication_slots {fix}, or drop a replica"
        )
    if not can:
        raise DatabaseError(
            f"role {user!r} may not replicate: ALTER ROLE {user} REPLICATION (or use a "
            "superuser), and allow it a `replication` line in the primary's pg_hba.conf"
        )
    ours = _wheel_major()
    if ours is not None and major != ours:
        raise DatabaseError(
            f"the primary runs PostgreSQL {major}; the embedded binaries are PostgreSQL "
            f"{ours}: a physical replica needs the same major version"
        )
    return str(database)


def _wheel_major() -> int | None:
    try:
        out = subprocess.run(
            [str(postmaster.binary("postgres")), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return int(out.split()[-1].split(".")[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _base_backup(record: ReplicaRecord) -> None:
    """``pg_basebackup`` as the server's system user, so it owns what it writes."""
    from psycopg.conninfo import make_conninfo

    target = record.data_dir
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o700)  # PostgreSQL refuses a data folder others can read
    user = postmaster.prepare(target)
    conninfo = make_conninfo(record.source_url, application_name=record.slot)
    argv = [
        str(postmaster.binary("pg_basebackup")),
        "--pgdata",
        str(target),
        "--write-recovery-conf",  # standby.signal + primary_conninfo + primary_slot_name
        "--wal-method=stream",
        "--create-slot",
        "--slot",
        record.slot,
        "--checkpoint=fast",
        "--no-password",
        "--dbname",
        conninfo,
    ]
    log.info("copying %s into %s (pg_basebackup)", redact(record.source_url), target)
    result = subprocess.run(argv, capture_output=True, text=True, user=user, cwd="/", check=False)
    if result.returncode != 0:
        lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
        lines = [ln for ln in lines if "skipping special file" not in ln] or ["no message"]
        hint = ""
        if "pg_hba.conf" in result.stderr:
            hint = (
                ": allow it a `replication` line in the primary's pg_hba.conf (e.g. `local "
                "replication all scram-sha-256`, or a host line for this machine) and reload it"
            )
        raise DatabaseError(f"pg_basebackup failed ({'; '.join(lines[-2:])[:300]}){hint}")


def _prepare_standby(target: Path) -> None:
    """What the copy brought that belongs to the primary: its socket lock files (the
    embedded server keeps its socket in its data folder) and its log."""
    for stale in target.glob(".s.PGSQL.*"):
        stale.unlink()
    log_file = target / "log"
    if log_file.exists():
        log_file.write_text("")
    with (target / "postgresql.auto.conf").open("a") as conf:
        conf.write("# added by casebase db replica create\n")
        for key, value in STANDBY_SETTINGS.items():
            conf.write(f"{key} = '{value}'\n")


def _undo(record: ReplicaRecord, created_dir: bool) -> None:
    """After a failed create: drop the slot pg_basebackup made, remove what it copied."""
    try:
        _drop_slot(record)
    except DatabaseError as exc:
        log.warning("%s", exc)
    if record.data_dir.exists():
        if created_dir:
            shutil.rmtree(record.data_dir, ignore_errors=True)
        else:
            for child in record.data_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()


# --- running one --------------------------------------------------------------------------


def start(name_or_dir: str, *, settings: Settings | None = None) -> ReplicaState:
    """Start a stopped replica (it catches up through its slot); a running one is left."""
    settings = settings or load_settings()
    record = Registry(settings.home).find(name_or_dir)
    if running(record) is None:
        _missing_guard(record)
        user = postmaster.prepare(record.data_dir)
        try:
            postmaster.launch(record.data_dir, user)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise DatabaseError(
                f"replica {record.name} ({record.data_dir}) did not start: {last_log_line(record)}"
            ) from exc
    if record.promoted is None:
        _wait_streaming(record)
    return state(record)


def stop(name_or_dir: str, *, settings: Settings | None = None) -> bool:
    """Fast shutdown; return whether it was running. Its slot keeps its WAL meanwhile."""
    settings = settings or load_settings()
    record = Registry(settings.home).find(name_or_dir)
    if running(record) is None:
        return False
    postmaster.stop(record.data_dir, postmaster.run_as())
    return True


@dataclass(frozen=True)
class Promotion:
    state: ReplicaState
    not_replayed_bytes: int | None  # WAL of the old primary it did not have (None: unknown)


def promote(name_or_dir: str, *, settings: Settings | None = None) -> Promotion:
    """Make the replica a primary; drop its slot on the old one."""
    settings = settings or load_settings()
    registry = Registry(settings.home)
    with registry.locked():
        record = registry.find(name_or_dir)
        if record.promoted is not None:
            raise InputError(f"replica {record.name} was promoted already ({record.promoted})")
        url = replica_url(record)
        if url is None:
            raise InputError(f"replica {record.name} is not running: `casebase db replica start`")
        lag = behind(record)
        with connect(url, autocommit=True) as conn:
            done = conn.execute("SELECT pg_promote(true, 60)").fetchone()
        if not done or not done[0]:
            raise DatabaseError(f"replica {record.name} did not finish promoting in 60 s")
        record = record.promoted_at(_now())
        registry.save(record)
    try:
        _drop_slot(record, wait_s=10.0)
    except DatabaseError as exc:
        log.warning("%s", exc)
    return Promotion(state(record), lag)


def drop(name_or_dir: str, *, settings: Settings | None = None) -> ReplicaRecord:
    """Stop the replica, drop its slot on the primary, forget it (its folder stays)."""
    settings = settings or load_settings()
    registry = Registry(settings.home)
    with registry.locked():
        record = registry.find(name_or_dir)
        if running(record) is not None:
            postmaster.stop(record.data_dir, postmaster.run_as())
        registry.remove(record)
    if record.promoted is None:
        try:
            _drop_slot(record, wait_s=10.0)
        except DatabaseError as exc:  # a primary that is gone keeps no WAL for it
            log.warning("%s", exc)
    return record


def wait(
    name_or_dir: str | None = None, *, timeout: float = 60.0, settings: Settings | None = None
) -> list[tuple[str, Replay]]:
    """Wait until each running standby (or the one named) has replayed everything its
    primary had committed when this was called."""
    settings = settings or load_settings()
    registry = Registry(settings.home)
    records = [registry.find(name_or_dir)] if name_or_dir else registry.all()
    out = []
    for record in records:
        url = replica_url(record)
        if record.promoted is not None or url is None:
            if name_or_dir:
                raise InputError(f"replica {record.name} is not a running standby")
            continue
        with connect(record.source_url, autocommit=True) as primary:
            lsn = current_lsn(primary)
        with connect(url) as conn:
            out.append((record.name, wait_for_replay(conn, lsn, timeout=timeout, url=url)))
    return out


# --- helpers ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _wait_streaming(record: ReplicaRecord, timeout: float = STREAMING_TIMEOUT_S) -> None:
    url = replica_url(record)
    deadline = time.monotonic() + timeout
    status = None
    while url is not None and time.monotonic() < deadline:
        with connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
        status = row[0] if row else None
        if status == "streaming":
            return
        time.sleep(0.1)
    raise DatabaseError(
        f"replica {record.name} started but does not stream from {redact(record.source_url)} "
        f"(WAL receiver: {status or 'not running'}; its log: {last_log_line(record)})"
    )


def _drop_slot(record: ReplicaRecord, wait_s: float = 0.0) -> None:
    """Drop the replica's slot on its primary (waiting while a receiver still holds it)."""
    sql = f"SELECT pg_drop_replication_slot('{record.slot}')"
    try:
        with connect(record.source_url, autocommit=True, register=False) as primary:
            deadline = time.monotonic() + wait_s
            while True:
                row = primary.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (record.slot,)
                ).fetchone()
                if row is None:
                    return
                if not row[0]:
                    primary.execute(sql)
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
    except DatabaseError as exc:
        raise DatabaseError(
            f"could not drop replication slot {record.slot} on the primary ({exc}); it keeps "
            f"WAL until dropped: run {sql} there"
        ) from exc
    raise DatabaseError(
        f"replication slot {record.slot} is still in use on the primary: stop whatever streams "
        f"from it, then run {sql} there"
    )


def _missing_guard(record: ReplicaRecord) -> None:
    if not (record.data_dir / "PG_VERSION").exists():
        raise DatabaseError(
            f"replica {record.name}: {record.data_dir} holds no data folder any more; "
            f"`casebase db replica drop {record.name}` forgets it"
        )
