"""Settings, read from the environment in exactly one place.

Every setting is one row of ``SETTINGS`` (name, environment variables, default,
help); ``tests/test_settings_documented.py`` checks each one is in the README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from casebase.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[str, ...]
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        ("CASEBASE_DATABASE_URL", "DATABASE_URL"),
        None,
        "PostgreSQL URL of a real server (pgvector >= 0.8). Unset: the embedded server.",
    ),
    Setting(
        "read_url",
        ("CASEBASE_READ_URL",),
        None,
        "PostgreSQL URL that searches, briefs and eval read from: a hot standby (casebase db "
        "replica create), or a libpq multi-host URL with target_session_attrs=prefer-standby. "
        "Unset: the primary. A standby that is down sends reads to the primary, with one "
        "warning.",
    ),
    Setting(
        "home",
        ("CASEBASE_HOME",),
        None,
        "Where the embedded cluster, model cache and LLM cache live "
        "(default: the user data dir, e.g. ~/.local/share/casebase).",
    ),
    Setting(
        "model",
        ("CASEBASE_MODEL",),
        "clip-vit-b-32",
        "Default embedding model: a preset, an open_clip name, or an hf-hub: id.",
    ),
    Setting(
        "device",
        ("CASEBASE_DEVICE",),
        None,
        "torch device for embedding and training (default: cuda when present, else cpu).",
    ),
    Setting(
        "statement_timeout_ms",
        ("CASEBASE_STATEMENT_TIMEOUT_MS",),
        "30000",
        "Statement timeout applied to every search, in milliseconds.",
    ),
    Setting(
        "max_k",
        ("CASEBASE_MAX_K",),
        "1000",
        "Largest k a search may ask for.",
    ),
    Setting(
        "llm_model",
        ("CASEBASE_LLM_MODEL",),
        None,
        "litellm model string for the optional LLM back end, e.g. gemini/gemini-2.5-flash.",
    ),
    Setting(
        "log_level",
        ("CASEBASE_LOG_LEVEL",),
        "WARNING",
        "Logging level of the casebase command (DEBUG, INFO, WARNING, ERROR).",
    ),
)


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    read_url: str | None
    home: Path
    model: str
    device: str | None
    statement_timeout_ms: int
    max_k: int
    llm_model: str | None
    log_level: str

    @property
    def embedded_dir(self) -> Path:
        return self.home / "pg"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def _raw(setting: Setting, environ: dict[str, str]) -> str | None:
    for var in setting.env:
        value = environ.get(var)
        if value not in (None, ""):
            return value
    return setting.default


def _as_int(value: str | None, setting: Setting) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"{setting.env[0]} must be a whole number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{setting.env[0]} must be positive, got {number}")
    return number


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read every setting from ``environ`` (default: ``os.environ``)."""
    env = dict(os.environ if environ is None else environ)
    raw = {s.name: _raw(s, env) for s in SETTINGS}
    by_name = {s.name: s for s in SETTINGS}
    home = raw["home"]
    if home is None:
        import platformdirs

        home = platformdirs.user_data_dir("casebase", appauthor=False)
    return Settings(
        database_url=raw["database_url"],
        read_url=raw["read_url"],
        home=Path(home).expanduser().resolve(),
        model=str(raw["model"]),
        device=raw["device"],
        statement_timeout_ms=_as_int(raw["statement_timeout_ms"], by_name["statement_timeout_ms"]),
        max_k=_as_int(raw["max_k"], by_name["max_k"]),
        llm_model=raw["llm_model"],
        log_level=str(raw["log_level"]).upper(),
    )
