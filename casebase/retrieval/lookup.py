"""Small reads around a search: the image files of hits, and studies picked by metadata.

They read the analyst views (``casebase.images``, ``casebase.studies``) and call
``casebase.query_image``, so an analyst login can use them; the client calls them (the
query image of a study search, a contact sheet, a demo's query study).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from psycopg import Connection


def image_uris(conn: Connection, image_ids: Sequence[int]) -> dict[int, str]:
    """image_id → the URI (file path) it was loaded from."""
    rows = conn.execute(
        "SELECT image_id, uri FROM casebase.images WHERE image_id = ANY(%s)", (list(image_ids),)
    ).fetchall()
    return dict(rows)


@dataclass(frozen=True)
class QueryImage:
    """The image that stands for a study in a search (``casebase.query_image``: a
    frontal view first, then the lowest image id), with what a search by the study
    needs: its modality (the default leaf) and patient key (excluded from the hits)."""

    study_id: str
    image_id: int
    vector: np.ndarray
    modality: str
    patient_key: str | None


def query_image(conn: Connection, study_id: str, space: str | None = None) -> QueryImage:
    """The query image of ``study_id`` in ``space`` (default: the default space), by the
    one SQL rule every search uses; an unknown study or one with no image in the space
    is a QueryError."""
    import psycopg

    from casebase.errors import QueryError
    from casebase.retrieval.search import as_array

    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT image_id, vec, modality, patient_key FROM casebase.query_image(%s, %s)",
                (study_id, space),
            ).fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        raise QueryError(str(exc.diag.message_primary or exc).strip()) from exc
    if row is None:  # the function raises instead; a replaced one might not
        raise QueryError(f"study {study_id!r} has no query image")
    image_id, vector, modality, patient_key = row
    return QueryImage(study_id, image_id, as_array(vector), modality, patient_key)


def query_image_uri(conn: Connection, study_id: str, space: str | None = None) -> str | None:
    """The URI of a study's query image (the film a study query is shown by); None if
    the study is unknown or has no image in the space."""
    from casebase.errors import QueryError

    try:
        image = query_image(conn, study_id, space)
    except QueryError:
        return None
    uris = image_uris(conn, [image.image_id])
    return uris.get(image.image_id)


def study_ids(
    conn: Connection,
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
