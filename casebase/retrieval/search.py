"""Searching: Python only binds parameters of the SQL functions analysts call too."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from casebase.errors import QueryError
from casebase.retrieval.filters import Filters
from casebase.retrieval.hits import Hit

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

_COLUMNS = (
    "rank, study_id, distance, modality, age, sex, view, flags, impression, image_id, route, "
    "sources, score"
)


def _filter_args(filters: Filters) -> list[tuple[str, object]]:
    low, high = filters.age if filters.age else (None, None)
    return [
        ("modality", filters.modality),
        ("sex", filters.sex),
        ("age_min", low),
        ("age_max", high),
        ("exclude_flags", list(filters.exclude_flags) or None),
        ("views", list(filters.views) if filters.views else None),
        ("require_flags", list(filters.require_flags) or None),
        ("date_from", filters.date_from),
        ("date_to", filters.date_to),
        ("batches", list(filters.batches) if filters.batches else None),
        ("attributes", json.dumps(filters.attributes) if filters.attributes else None),
    ]


_CASTS = {
    "attributes": "::jsonb",
    "views": "::text[]",
    "exclude_flags": "::text[]",
    "require_flags": "::text[]",
    "batches": "::text[]",
    "date_from": "::date",
    "date_to": "::date",
}


def _named(args: Sequence[tuple[str, object]]) -> tuple[str, list[object]]:
    parts, params = [], []
    for name, value in args:
        if value is None:
            continue
        parts.append(f"{name} => %s{_CASTS.get(name, '')}")
        params.append(value)
    return ", ".join(parts), params


def as_array(vector) -> np.ndarray:
    """A float32 array from a list, an array, or pgvector's ``Vector``."""
    if hasattr(vector, "to_numpy"):
        vector = vector.to_numpy()
    return np.asarray(vector, dtype=np.float32).ravel()


def _hits(rows) -> list[Hit]:
    return [
        Hit(
            rank=r[0],
            study_id=r[1],
            distance=float(r[2]) if r[2] is not None else float("nan"),
            modality=r[3],
            age=r[4],
            sex=r[5],
            view=r[6],
            flags=tuple(r[7] or ()),
            impression=r[8],
            image_id=r[9],
            route=r[10],
            sources=tuple(r[11] or ("image",)),
            score=r[12],
        )
        for r in rows
    ]


def _run(conn: Connection, sql: str, params: list[object], timeout_ms: int) -> list:
    import psycopg

    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.errors.QueryCanceled as exc:
            raise QueryError(
                f"the search took longer than {timeout_ms} ms (CASEBASE_STATEMENT_TIMEOUT_MS); "
                "narrow the filters or lower k"
            ) from exc
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.DataException) as exc:
            raise QueryError(str(exc.diag.message_primary or exc).strip()) from exc


def check_k(k: int, max_k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k > max_k:
        raise QueryError(f"k must be between 1 and {max_k}, got {k!r}")


def search_vector(
    conn,
    vector,
    *,
    k: int,
    filters: Filters,
    space: str | None,
    exact: bool,
    exclude_patient: str | None = None,
    exclude_study: str | None = None,
    timeout_ms: int = 30000,
) -> list[Hit]:
    vec = as_array(vector)
    if vec.size == 0 or not np.all(np.isfinite(vec)):
        raise QueryError("the query vector is empty or has NaN/inf values")
    args = [
        *_filter_args(filters),
        ("exclude_patient", exclude_patient),
        ("exclude_study", exclude_study),
        ("space", space),
        ("exact", True if exact else None),
    ]
    named, params = _named(args)
    sql = (
        f"SELECT {_COLUMNS} FROM casebase.similar_to_vector(%s::vector, %s"
        + (f", {named}" if named else "")
        + ")"
    )
    from pgvector import Vector

    return _hits(_run(conn, sql, [Vector(vec), k, *params], timeout_ms))


def search_study(
    conn,
    study_id: str,
    *,
    k: int,
    filters: Filters,
    space: str | None,
    exact: bool,
    timeout_ms: int = 30000,
) -> list[Hit]:
    args = [*_filter_args(filters), ("space", space), ("exact", True if exact else None)]
    if not filters.exclude_same_patient:
        args.append(("exclude_same_patient", False))
    named, params = _named(args)
    sql = (
        f"SELECT {_COLUMNS} FROM casebase.similar_cases(%s, %s"
        + (f", {named}" if named else "")
        + ")"
    )
    return _hits(_run(conn, sql, [study_id, k, *params], timeout_ms))


def search_hybrid(
    conn,
    vector,
    text: str,
    *,
    k: int,
    filters: Filters,
    space: str | None,
    exclude_patient: str | None = None,
    timeout_ms: int = 30000,
) -> list[Hit]:
    low, high = filters.age if filters.age else (None, None)
    args = [
        ("modality", filters.modality),
        ("sex", filters.sex),
        ("age_min", low),
        ("age_max", high),
        ("exclude_flags", list(filters.exclude_flags) or None),
        ("exclude_patient", exclude_patient),
        ("space", space),
    ]
    named, params = _named(args)
    from pgvector import Vector

    vec = None if vector is None else Vector(as_array(vector))
    sql = (
        f"SELECT {_COLUMNS} FROM casebase.hybrid_search(%s::vector, %s, %s"
        + (f", {named}" if named else "")
        + ")"
    )
    return _hits(_run(conn, sql, [vec, text, k, *params], timeout_ms))


def study_vectors(conn: Connection, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
    rows = conn.execute(
        "SELECT image_id, vec FROM casebase.embeddings WHERE image_id = ANY(%s)",
        (list(image_ids),),
    ).fetchall()
    return {r[0]: as_array(r[1]) for r in rows}


def diversify(
    hits: Sequence[Hit],
    vectors: dict[int, np.ndarray],
    *,
    k: int,
    min_distance: float,
    patient_keys: dict[str, str | None] | None = None,
) -> list[Hit]:
    """Greedy: keep a hit unless it is a near-duplicate (same patient, or within
    ``min_distance`` of a hit already kept), so the top k is not one case k times."""
    kept: list[Hit] = []
    kept_vecs: list[np.ndarray] = []
    seen_patients: set[str] = set()
    for hit in hits:
        patient = (patient_keys or {}).get(hit.study_id)
        if patient and patient in seen_patients:
            continue
        vec = vectors.get(hit.image_id) if hit.image_id is not None else None
        if vec is not None and kept_vecs:
            nearest = 1.0 - float(np.max(np.stack(kept_vecs) @ vec))
            if nearest < min_distance:
                continue
        kept.append(hit)
        if vec is not None:
            kept_vecs.append(vec)
        if patient:
            seen_patients.add(patient)
        if len(kept) == k:
            break
    return [replace(h, rank=i + 1) for i, h in enumerate(kept)]
