"""Embedding spaces (one model + preprocessing each) and their partitions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from casebase.db.connection import scalar
from casebase.errors import InputError, QueryError

if TYPE_CHECKING:
    from psycopg import Connection


@dataclass(frozen=True)
class Space:
    space_id: int
    name: str
    model_name: str
    pretrained: str | None
    checkpoint_sha256: str | None
    dim: int
    image_size: int | None
    preprocess: str
    fusion: dict | None
    is_default: bool
    checkpoint_path: str | None = None


_COLUMNS = (
    "space_id, name, model_name, pretrained, checkpoint_sha256, dim, image_size, preprocess, "
    "fusion, is_default, checkpoint_path"
)
# Readers go through the view so that analyst logins (no table rights) can use them.
_VIEW_COLUMNS = _COLUMNS.replace("name,", "space,", 1)


def _space(row: Sequence[Any]) -> Space:
    space_id, name, model, pretrained, sha, dim, size, preprocess, fusion, default, path = row
    return Space(
        space_id, name, model, pretrained, sha, dim, size, preprocess, fusion, bool(default), path
    )


def list_spaces(conn: Connection) -> list[Space]:
    rows = conn.execute(f"SELECT {_VIEW_COLUMNS} FROM casebase.spaces ORDER BY space_id")
    return [_space(r) for r in rows.fetchall()]


def get_space(conn: Connection, name: str | None = None) -> Space:
    """The named space, or the default one (the only one if there is just one)."""
    if name is not None:
        row = conn.execute(
            f"SELECT {_VIEW_COLUMNS} FROM casebase.spaces WHERE space = %s", (name,)
        ).fetchone()
        if row is None:
            known = ", ".join(s.name for s in list_spaces(conn)) or "none yet: ingest a batch"
            raise QueryError(f"unknown embedding space {name!r} (known: {known})")
        return _space(row)
    spaces = list_spaces(conn)
    if not spaces:
        raise QueryError("no embedding space exists yet: ingest a batch first")
    for space in spaces:
        if space.is_default:
            return space
    if len(spaces) == 1:
        return spaces[0]
    names = ", ".join(s.name for s in spaces)
    raise QueryError(f"several embedding spaces ({names}): pass --space or set a default")


def ensure_space(
    conn,
    *,
    name: str,
    model_name: str,
    dim: int,
    pretrained: str | None = None,
    checkpoint_sha256: str | None = None,
    image_size: int | None = None,
    preprocess: str = "",
    fusion: dict | None = None,
    checkpoint_path: str | None = None,
) -> Space:
    """Register a space once; a second call with a different model is an error."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('casebase.embedding_space'))")
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM casebase.embedding_space WHERE name = %s", (name,)
    ).fetchone()
    if row is not None:
        space = _space(row)
        wanted = (model_name, pretrained, checkpoint_sha256, dim)
        have = (space.model_name, space.pretrained, space.checkpoint_sha256, space.dim)
        if wanted != have:
            raise InputError(
                f"embedding space {name!r} already holds {have[0]} "
                f"(dim {have[3]}); this model differs: choose another space name"
            )
        return space
    first = scalar(conn, "SELECT count(*) FROM casebase.embedding_space") == 0
    row = conn.execute(
        "INSERT INTO casebase.embedding_space (name, model_name, pretrained, checkpoint_sha256, "
        "dim, image_size, preprocess, fusion, is_default, checkpoint_path) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (
            name,
            model_name,
            pretrained,
            checkpoint_sha256,
            dim,
            image_size,
            preprocess,
            json.dumps(fusion) if fusion is not None else None,
            first,
            checkpoint_path,
        ),
    ).fetchone()
    return _space(row)


def set_default(conn: Connection, name: str) -> Space:
    space = get_space(conn, name)
    conn.execute("UPDATE casebase.embedding_space SET is_default = false WHERE is_default")
    conn.execute(
        "UPDATE casebase.embedding_space SET is_default = true WHERE space_id = %s",
        (space.space_id,),
    )
    return get_space(conn, name)


def ensure_partition(conn: Connection, space: Space, modality: str) -> str:
    """Create (once) the leaf partition of one space and modality; return its table name."""
    return scalar(
        conn,
        "SELECT casebase.ensure_embedding_partition(%s::smallint, %s)",
        (space.space_id, modality),
    )


def leaf_partitions(conn: Connection, space: Space) -> list[tuple[str, str]]:
    """(modality, table) for each leaf of a space."""
    rows = conn.execute(
        """
        SELECT pg_get_expr(c.relpartbound, c.oid), c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = 'casebase' AND p.relname = %s
        ORDER BY c.relname
        """,
        (f"embedding_s{space.space_id}",),
    ).fetchall()
    out = []
    for bound, table in rows:
        modality = bound.split("'")[1] if "'" in bound else bound
        out.append((modality, table))
    return out


def _leaf_name(space: Space, modality: str) -> str:
    return f"embedding_s{space.space_id}_{modality.lower()}"


def drop_vector_index(conn: Connection, space: Space, modality: str) -> None:
    """Drop a leaf's HNSW index before a bulk back-fill (building once is much faster
    than inserting 1M vectors into a live graph). Needs the table owner's rights."""
    leaf = _leaf_name(space, modality)
    conn.execute(f'DROP INDEX IF EXISTS casebase."{leaf}_hnsw"')


def hnsw_params(conn: Connection) -> tuple[int, int]:
    """The installation's HNSW (m, ef_construction): what new leaves get (revision 0005)."""
    rows: dict[str, str] = dict(
        conn.execute(
            "SELECT key, value FROM casebase.setting"
            " WHERE key IN ('hnsw_m', 'hnsw_ef_construction')"
        ).fetchall()
    )
    return int(rows.get("hnsw_m", 16)), int(rows.get("hnsw_ef_construction", 64))


def create_vector_index(
    conn, space: Space, modality: str, *, m: int | None = None, ef_construction: int | None = None
) -> None:
    """(Re)build a leaf's HNSW index, e.g. after a bulk back-fill; parameters default to
    the installation's settings, as for a new leaf."""
    default_m, default_efc = hnsw_params(conn)
    m = default_m if m is None else m
    ef_construction = default_efc if ef_construction is None else ef_construction
    leaf = _leaf_name(space, modality)
    conn.execute(
        f'CREATE INDEX IF NOT EXISTS "{leaf}_hnsw" ON casebase."{leaf}" '
        f"USING hnsw ((vec::vector({int(space.dim)})) vector_cosine_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )
