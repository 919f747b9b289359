"""The labeller's YAML data files (lexicon, cues, conventions) parsed, or one ConfigError
that names the file: a broken data file is a user's error, never a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from casebase.errors import ConfigError


def load_mapping(
    source: str, *, what: str, origin: str, key: str | None = None
) -> Mapping[str, Any]:
    """``source`` parsed as a YAML mapping (holding ``key``, when given)."""
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping) or (key is not None and key not in data):
        wanted = f"a mapping with {key!r}" if key is not None else "a mapping"
        raise ConfigError(f"{what} {origin}: expected {wanted}")
    return data
