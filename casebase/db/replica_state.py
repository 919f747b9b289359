"""What a replica is doing now: running or not, its URL, how far behind its primary it is,
and how much WAL the primary keeps for it (``casebase db replica list``).

Everything here is read from PostgreSQL itself: ``postmaster.pid`` for whether it runs
and where its socket is, ``pg_stat_wal_receiver`` on the standby, and
``pg_replication_slots`` / ``pg_stat_replication`` on the primary.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from casebase.config import Settings, load_settings
from casebase.db import postmaster
from casebase.db.connection import connect, redact
from casebase.db.replica_registry import Registry, ReplicaRecord
from casebase.db.replication import current_lsn
from casebase.errors import DatabaseError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaState:
    """A replica as ``casebase db replica list`` shows it."""

    name: str
    data_dir: Path
    role: str  # "standby", "primary" (promoted), "stopped", "missing" (no data folder)
    pid: int | None
    url: str | None
    source: str  # the primary, password hidden
    receiver: str | None  # its WAL receiver: "streaming", ...
    behind_bytes: int | None  # WAL the primary has written that it has not replayed
    replay_lag_s: float | None  # the primary's pg_stat_replication.replay_lag
    retained_bytes: int | None  # WAL the primary keeps for its slot
    slot: str | None = None  # its slot's wal_status: "reserved", ..., "lost" (make it again)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "data_dir": str(self.data_dir)}


def states(settings: Settings | None = None) -> list[ReplicaState]:
    settings = settings or load_settings()
    return [state(r) for r in Registry(settings.home).all()]


def state(record: ReplicaRecord) -> ReplicaState:
    url = replica_url(record)
    role = "missing" if not (record.data_dir / "PG_VERSION").exists() else "stopped"
    receiver = replay_lag = slot = None
    if url is not None:
        role = "primary" if record.promoted else "standby"
        try:
            with connect(url, autocommit=True) as conn:
                row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
                receiver = row[0] if row else None
        except DatabaseError as exc:
            log.warning("replica %s does not answer: %s", record.name, exc)
    not_replayed = behind(record) if role == "standby" else None
    retained = None
    if record.promoted is None:
        try:
            with connect(record.source_url, autocommit=True) as primary:
                row = primary.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint, "
                    "extract(epoch FROM r.replay_lag)::float8, s.wal_status "
                    "FROM pg_replication_slots s "
                    "LEFT JOIN pg_stat_replication r ON r.application_name = s.slot_name "
                    "WHERE s.slot_name = %s",
                    (record.slot,),
                ).fetchone()
            if row is not None:
                retained, replay_lag, slot = row
        except DatabaseError as exc:
            log.warning("the primary of replica %s does not answer: %s", record.name, exc)
    info = running(record)
    return ReplicaState(
        name=record.name,
        data_dir=record.data_dir,
        role=role,
        pid=info.pid if info else None,
        url=url,
        source=redact(record.source_url),
        receiver=receiver,
        behind_bytes=not_replayed,
        replay_lag_s=replay_lag,
        retained_bytes=retained,
        slot=slot,
    )


def render(rows: list[ReplicaState]) -> str:
    if not rows:
        return "no replicas (casebase db replica create DIR makes one)"
    lines = [f"{'name':<16} {'role':<8} {'behind':>12} {'lag s':>7} {'kept WAL':>12}  url / folder"]
    for r in rows:
        behind = "-" if r.behind_bytes is None else f"{r.behind_bytes:,} B"
        lag = "-" if r.replay_lag_s is None else f"{r.replay_lag_s:.3f}"
        kept = "-" if r.retained_bytes is None else f"{r.retained_bytes:,} B"
        lines.append(
            f"{r.name:<16} {r.role:<8} {behind:>12} {lag:>7} {kept:>12}  "
            f"{r.url or r.data_dir}  (from {r.source})"
        )
        if r.slot == "lost":
            lines.append(
                f"  {r.name}: the primary gave up its WAL (max_slot_wal_keep_size): it cannot "
                "catch up; drop it and create it again"
            )
    return "\n".join(lines)


def running(record: ReplicaRecord) -> postmaster.PidFile | None:
    import psutil

    info = postmaster.read_pid_file(record.data_dir)
    if info is None or info.status not in postmaster.READY or not psutil.pid_exists(info.pid):
        return None
    return info


def replica_url(record: ReplicaRecord) -> str | None:
    """The replica's URL (its own socket, the source's user and database), if it runs."""
    from psycopg.conninfo import conninfo_to_dict

    info = running(record)
    if info is None:
        return None
    params = conninfo_to_dict(record.source_url)
    user = quote(str(params.get("user") or "postgres"), safe="")
    password = params.get("password")
    login = f"{user}:{quote(unquote(str(password)), safe='')}" if password else user
    socket = quote(str(info.socket_dir or record.data_dir), safe="/")
    return f"postgresql://{login}@/{quote(record.database, safe='')}?host={socket}"


def behind(record: ReplicaRecord) -> int | None:
    """Bytes of the primary's WAL the replica has not replayed (None: one does not answer)."""
    url = replica_url(record)
    if url is None:
        return None
    try:
        with connect(record.source_url, autocommit=True) as primary:
            lsn = current_lsn(primary)
        with connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT greatest(0, pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()))::bigint",
                (lsn,),
            ).fetchone()
    except DatabaseError:
        return None
    return int(row[0]) if row and row[0] is not None else None


def last_log_line(record: ReplicaRecord) -> str:
    log_file = record.data_dir / "log"
    if not log_file.is_file():
        return "no log"
    lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "empty log"
