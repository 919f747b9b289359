"""Where casebase remembers the read replicas it made: one JSON file per replica under
``$CASEBASE_HOME/replicas/``, so ``casebase db replica list|start|stop|promote|drop``
find them by name or by data folder from any later command.

A record holds the primary's URL (the standby's own ``postgresql.auto.conf`` holds it
too, as ``primary_conninfo``), so the files are written readable by this user only.
Writes are serialised by an inter-process lock beside them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from casebase.errors import ConfigError, InputError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")


@dataclass(frozen=True)
class ReplicaRecord:
    name: str
    data_dir: Path
    source_url: str  # the primary it was copied from, and streams from
    database: str  # the database casebase's URLs for it name
    slot: str  # its physical replication slot on the primary
    created: str  # ISO time
    promoted: str | None = None  # ISO time it became a primary

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "data_dir": str(self.data_dir)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ReplicaRecord:
        fields = json.loads(text)
        return cls(**{**fields, "data_dir": Path(fields["data_dir"])})

    def promoted_at(self, when: str) -> ReplicaRecord:
        return replace(self, promoted=when)


def name_for(data_dir: Path) -> str:
    """A default name from the folder's name: lower case, letters, digits, - and _."""
    name = re.sub(r"[^a-z0-9_-]+", "-", data_dir.name.lower()).strip("-_")[:40]
    return name or "replica"


def slot_for(name: str) -> str:
    """The replication slot of replica ``name`` (slot names allow [a-z0-9_] only)."""
    return "casebase_" + name.replace("-", "_")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(
            f"replica name {name!r}: use 1-41 lower-case letters, digits, - or _ "
            "(it names a replication slot on the primary)"
        )
    return name


class Registry:
    """The replica records of one casebase home."""

    def __init__(self, home: Path) -> None:
        self.folder = home / "replicas"

    def _ensure(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create {self.folder} ({exc.strerror or exc}): set CASEBASE_HOME to a "
                "folder this user can write"
            ) from exc

    @contextmanager
    def locked(self) -> Iterator[None]:
        import fasteners

        self._ensure()
        with fasteners.InterProcessLock(str(self.folder / ".lock")):
            yield

    def all(self) -> list[ReplicaRecord]:
        if not self.folder.is_dir():
            return []
        return [ReplicaRecord.from_json(p.read_text()) for p in sorted(self.folder.glob("*.json"))]

    def save(self, record: ReplicaRecord) -> None:
        self._ensure()
        path = self.folder / f"{record.name}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(record.to_json())
        tmp.replace(path)

    def remove(self, record: ReplicaRecord) -> None:
        (self.folder / f"{record.name}.json").unlink(missing_ok=True)

    def named(self, name: str) -> ReplicaRecord | None:
        return next((r for r in self.all() if r.name == name), None)

    def at(self, data_dir: Path) -> ReplicaRecord | None:
        wanted = data_dir.expanduser().resolve()
        return next((r for r in self.all() if r.data_dir == wanted), None)

    def find(self, name_or_dir: str) -> ReplicaRecord:
        """The replica of that name, else the one whose data folder that path is."""
        found = self.named(name_or_dir) or self.at(Path(name_or_dir))
        if found is None:
            known = ", ".join(r.name for r in self.all()) or "none"
            raise InputError(
                f"no replica named {name_or_dir!r} or in that folder (known: {known}); "
                "`casebase db replica list` shows them"
            )
        return found
