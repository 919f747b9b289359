"""Registering a trained checkpoint as an embedding space, and dropping an old space.

A new model never overwrites an old space: it becomes a space of its own
(``add_checkpoint_space``), is back-filled (``casebase.train.reembed``), made
the default (``casebase.db.spaces.set_default``) and only then may the old one
go (``drop_space``). Until then both coexist and either can be searched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.db.connection import scalar
from casebase.db.spaces import Space, ensure_space, get_space, list_spaces
from casebase.errors import InputError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpaceRow:
    """A space and how many vectors it holds, per modality (for `casebase spaces list`)."""

    space: Space
    vectors: dict[str, int]


def add_checkpoint_space(
    conn: Connection, checkpoint: str | Path, *, name: str | None = None
) -> Space:
    """Register ``checkpoint`` (a `casebase train` model.pt) as a space; idempotent.

    Loading the checkpoint checks its sha256 and that its weights match its
    architecture (``ModelError`` naming the file otherwise), so a broken file
    is refused here, not at the first search.
    """
    from casebase.embedding import load_encoder

    path = Path(checkpoint).resolve()
    spec = load_encoder(checkpoint=path, device="cpu").spec
    try:
        space = ensure_space(
            conn,
            name=name or spec.name,
            model_name=spec.model_name,
            dim=spec.dim,
            pretrained=None,
            checkpoint_sha256=spec.checkpoint_sha256,
            image_size=spec.image_size,
            preprocess=spec.preprocess,
            checkpoint_path=str(path),
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    if space.checkpoint_path and Path(space.checkpoint_path) != path:
        log.warning(
            "space %s already points at %s (same sha256); keeping that path",
            space.name,
            space.checkpoint_path,
        )
    return space


def space_rows(conn: Connection) -> list[SpaceRow]:
    counts: dict[str, dict[str, int]] = {}
    for space_name, modality, n in conn.execute(
        "SELECT space, modality, count(*) FROM casebase.embeddings GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall():
        counts.setdefault(space_name, {})[modality] = n
    rows = [SpaceRow(s, counts.get(s.name, {})) for s in list_spaces(conn)]
    conn.commit()
    return rows


def render_spaces(rows: list[SpaceRow]) -> str:
    if not rows:
        return "no embedding space yet: ingest a batch"
    lines = []
    for row in rows:
        s = row.space
        model = (
            f"checkpoint {s.checkpoint_path}"
            if s.checkpoint_path
            else s.model_name + (f" ({s.pretrained})" if s.pretrained else "")
        )
        vectors = ", ".join(f"{m} {n}" for m, n in sorted(row.vectors.items())) or "no vectors"
        fusion = f"; label fusion {s.fusion}" if s.fusion else ""
        lines.append(
            f"{'*' if s.is_default else ' '} {s.name:<24} dim {s.dim:<5} {model}; {vectors}{fusion}"
        )
    return "\n".join(lines)


def drop_space(conn: Connection, name: str) -> int:
    """Delete a non-default space: its vectors (partitions dropped) and its row.

    Batches that were loaded into it keep their studies and images but no longer
    name a space. Returns the number of vectors deleted.
    """
    try:
        space = get_space(conn, name)
        if space.is_default:
            others = [s.name for s in list_spaces(conn) if s.name != name]
            hint = (
                f"make another space the default first (casebase spaces default {others[0]})"
                if others
                else "it is the only space"
            )
            raise InputError(f"space {name!r} is the default: {hint}")
        n = scalar(
            conn, "SELECT count(*) FROM casebase.embedding WHERE space_id = %s", (space.space_id,)
        )
        conn.execute(f'DROP TABLE IF EXISTS casebase."embedding_s{int(space.space_id)}"')
        conn.execute(
            "UPDATE casebase.ingest_batch SET space_id = NULL WHERE space_id = %s",
            (space.space_id,),
        )
        conn.execute("DELETE FROM casebase.embedding_space WHERE space_id = %s", (space.space_id,))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    log.info("dropped space %s (%d vectors)", name, n)
    return int(n)
