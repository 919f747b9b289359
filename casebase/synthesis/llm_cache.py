"""A disk cache of validated LLM answers: one sqlite file, safe across threads and runs.

Why: an LLM call costs money and seconds, and labelling the same report text with the
same model and prompt twice must give the same answer. Keys are sha256 digests of
(kind, model, prompt version, lexicon digest, sha256 of the text), so the cache never
holds report text in its keys; values are the *validated* answers only (an answer that
failed validation is never stored, so a cache hit needs no re-check beyond its shape).

A damaged or unwritable cache is logged and treated as a miss: it must never fail a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FILENAME = "llm_cache.sqlite"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cache_key(*parts: str) -> str:
    """A digest of the parts (JSON-encoded, so ("a", "bc") and ("ab", "c") differ)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class LLMCache:
    """Key → JSON value, in ``<directory>/llm_cache.sqlite``."""

    def __init__(self, directory: Path | str) -> None:
        self.path = Path(directory) / FILENAME
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        if not self._ready:
            with conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS answer ("
                    " key TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL,"
                    " value TEXT NOT NULL, created REAL NOT NULL)"
                )
            self._ready = True
        return conn

    def get(self, key: str) -> Any | None:
        try:
            with closing(self._connect()) as conn:
                row = conn.execute("SELECT value FROM answer WHERE key = ?", (key,)).fetchone()
            return None if row is None else json.loads(row[0])
        except (sqlite3.Error, OSError, ValueError) as exc:
            logger.warning("LLM cache %s unreadable (%s); treating as a miss", self.path, exc)
            return None

    def put(self, key: str, *, kind: str, model: str, value: Any) -> None:
        try:
            with closing(self._connect()) as conn, conn:
                conn.execute(
                    "INSERT OR REPLACE INTO answer (key, kind, model, value, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, kind, model, json.dumps(value, sort_keys=True), time.time()),
                )
        except (sqlite3.Error, OSError) as exc:
            logger.warning("LLM cache %s not writable (%s); answer not cached", self.path, exc)

    def __len__(self) -> int:
        try:
            with closing(self._connect()) as conn:
                return int(conn.execute("SELECT count(*) FROM answer").fetchone()[0])
        except (sqlite3.Error, OSError):
            return 0
