"""Small reads around a search: the image files of hits, and studies picked by metadata.

They read the analyst views (``casebase.images``, ``casebase.studies``), so an analyst
login can use them; the client calls them (a contact sheet, a demo's query study).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import Connection


def image_uris(conn: Connection, image_ids: Sequence[int]) -> dict[int, str]:
    """image_id → the URI (file path) it was loaded from."""
    rows = conn.execute(
        "SELECT image_id, uri FROM casebase.images WHERE image_id = ANY(%s)", (list(image_ids),)
    ).fetchall()
    return dict(rows)


def first_image_uri(conn: Connection, study_id: str) -> str | None:
    """The URI of a study's first image (the one a study query is shown by); None if the
    study is unknown."""
    row = conn.execute(
        "SELECT uri FROM casebase.images WHERE study_id = %s ORDER BY image_id LIMIT 1",
        (study_id,),
    ).fetchone()
    return row[0] if row else None


def study_ids(
    conn,
    *,
    batch: str | None = None,
    modality: str | None = None,
    exclude_flags: Sequence[str] = (),
    attribute_contains: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[str]:
    """Study ids in id order: of ``batch`` and ``modality``, with none of
    ``exclude_flags``, and whose manifest attribute KEY contains VALUE for each item of
    ``attribute_contains`` (a substring: label columns list several labels)."""
    where: list[str] = ["true"]
    params: list[object] = []
    if batch is not None:
        where.append("batch = %s")
        params.append(batch)
    if modality is not None:
        where.append("modality = %s")
        params.append(modality)
    if exclude_flags:
        where.append("NOT (flags && %s::text[])")
        params.append(list(exclude_flags))
    for key, value in (attribute_contains or {}).items():
        where.append("strpos(attributes ->> %s, %s) > 0")
        params += [key, value]
    sql = f"SELECT study_id FROM casebase.studies WHERE {' AND '.join(where)} ORDER BY study_id"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(int(limit))
    return [r[0] for r in conn.execute(sql, params).fetchall()]
