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


def filter_arguments(filters: Filters) -> list[tuple[str, object]]:
    """Every filter of ``filters`` as the named argument of the SQL functions.

    ``casebase.similar_to_vector``, ``similar_cases`` and ``hybrid_search`` take these
    names alike (their one builder, ``casebase._filter``, checks and applies them), and
    every search below passes this whole list, so no path can drop a filter. The one
    field not here is ``exclude_same_patient``: it needs the query's patient, which only
    a study query has (``search_study`` passes it on; a study + text search turns it into
    ``exclude_patient``). tests/test_filter_contract.py checks that every other field of
    ``Filters`` is here."""
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


# The arguments without a default: passed even when NULL (a text-only hybrid search).
_REQUIRED = frozenset({"q", "query", "study_id", "k"})

_CASTS = {
    "q": "::vector",
    "q_rerank": "::vector",
    "modify": "::vector",
    "neutral": "::vector",
    "attributes": "::jsonb",
    "views": "::text[]",
    "exclude_flags": "::text[]",
    "require_flags": "::text[]",
    "batches": "::text[]",
    "date_from": "::date",
    "date_to": "::date",
}


def _call(
    conn: Connection, function: str, args: Sequence[tuple[str, object]], timeout_ms: int
) -> list[Hit]:
    """``SELECT … FROM casebase.<function>(name => value, …)``: every argument named and
    bound as a parameter; an unset filter is left to the function's default (NULL)."""
    named, params = [], []
    for name, value in args:
        if value is None and name not in _REQUIRED:
            continue
        named.append(f"{name} => %s{_CASTS.get(name, '')}")
        params.append(value)
    sql = f"SELECT {_COLUMNS} FROM casebase.{function}({', '.join(named)})"
    return _hits(_run(conn, sql, params, timeout_ms))


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


def _query_vector(vector):
    from pgvector import Vector

    vec = as_array(vector)
    if vec.size == 0 or not np.all(np.isfinite(vec)):
        raise QueryError("the query vector is empty or has NaN/inf values")
    return Vector(vec)


def _vector_scope(
    filters: Filters,
    exclude_patient: str | None,
    exclude_study: str | None,
    space: str | None,
    exact: bool,
) -> list[tuple[str, object]]:
    """The arguments every vector-query search function shares after its query and k:
    the filters, the exclusions, the space and the route (one place to add a filter)."""
    return [
        *filter_arguments(filters),
        ("exclude_patient", exclude_patient),
        ("exclude_study", exclude_study),
        ("space", space),
        ("exact", True if exact else None),
    ]


def _study_scope(filters: Filters, space: str | None, exact: bool) -> list[tuple[str, object]]:
    """The same for the study-id functions, which exclude the study's patient in SQL."""
    return [
        *filter_arguments(filters),
        ("exclude_same_patient", None if filters.exclude_same_patient else False),
        ("space", space),
        ("exact", True if exact else None),
    ]


def search_vector(
    conn: Connection,
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
    """``casebase.similar_to_vector``: the k studies nearest to a vector."""
    args = [
        ("q", _query_vector(vector)),
        ("k", k),
        *_vector_scope(filters, exclude_patient, exclude_study, space, exact),
    ]
    return _call(conn, "similar_to_vector", args, timeout_ms)


def search_study(
    conn: Connection,
    study_id: str,
    *,
    k: int,
    filters: Filters,
    space: str | None,
    exact: bool,
    timeout_ms: int = 30000,
) -> list[Hit]:
    """``casebase.similar_cases``: the k studies nearest to a study's query image, the
    study itself and (unless ``filters.exclude_same_patient`` is False) its patient
    excluded."""
    args = [
        ("study_id", study_id),
        ("k", k),
        *_study_scope(filters, space, exact),
    ]
    return _call(conn, "similar_cases", args, timeout_ms)


def search_hybrid(
    conn: Connection,
    vector,
    text: str,
    *,
    k: int,
    filters: Filters,
    space: str | None,
    exact: bool = False,
    exclude_patient: str | None = None,
    exclude_study: str | None = None,
    timeout_ms: int = 30000,
) -> list[Hit]:
    """``casebase.hybrid_search``: image vectors (when ``vector`` is given) and report
    full text, fused by reciprocal rank; both lists filtered alike."""
    args = [
        ("q", None if vector is None else _query_vector(vector)),
        ("query", text),
        ("k", k),
        *_vector_scope(filters, exclude_patient, exclude_study, space, exact),
    ]
    return _call(conn, "hybrid_search", args, timeout_ms)


def search_composed(
    conn: Connection,
    vector,
    modify,
    neutral,
    weight: float,
    *,
    k: int,
    filters: Filters,
    space: str | None,
    exact: bool,
    exclude_patient: str | None = None,
    exclude_study: str | None = None,
    timeout_ms: int = 30000,
) -> list[Hit]:
    """``casebase.similar_composed``: the k studies nearest to ``vector`` moved by
    ``weight`` along ``modify - neutral`` (text-tower vectors; see ``retrieval.compose``)."""
    args = [
        ("q", _query_vector(vector)),
        ("modify", _query_vector(modify)),
        ("neutral", _query_vector(neutral)),
        ("modify_weight", weight),
        ("k", k),
        *_vector_scope(filters, exclude_patient, exclude_study, space, exact),
    ]
    return _call(conn, "similar_composed", args, timeout_ms)


def search_reranked(
    conn: Connection,
    vector,
    rerank_vector,
    *,
    rerank_space: str,
    rerank_candidates: int,
    k: int,
    filters: Filters,
    space: str | None,
    exact: bool,
    exclude_patient: str | None = None,
    exclude_study: str | None = None,
    timeout_ms: int = 30000,
) -> list[Hit]:
    """``casebase.similar_reranked``: ``rerank_candidates`` studies from ``space`` by
    ``vector``, the k best of them by ``rerank_vector`` in ``rerank_space``."""
    args = [
        ("q", _query_vector(vector)),
        ("q_rerank", _query_vector(rerank_vector)),
        ("rerank_space", rerank_space),
        ("k", k),
        *_vector_scope(filters, exclude_patient, exclude_study, space, exact),
        ("rerank_candidates", rerank_candidates),
    ]
    return _call(conn, "similar_reranked", args, timeout_ms)


def search_study_reranked(
    conn: Connection,
    study_id: str,
    *,
    rerank_space: str,
    rerank_candidates: int,
    k: int,
    filters: Filters,
    space: str | None,
    exact: bool,
    timeout_ms: int = 30000,
) -> list[Hit]:
    """``casebase.similar_cases_reranked``: a study's query image in both spaces; the
    study and (unless ``filters.exclude_same_patient`` is False) its patient excluded."""
    args = [
        ("study_id", study_id),
        ("rerank_space", rerank_space),
        ("k", k),
        *_study_scope(filters, space, exact),
        ("rerank_candidates", rerank_candidates),
    ]
    return _call(conn, "similar_cases_reranked", args, timeout_ms)


def check_rerank_candidates(candidates: int, k: int, max_k: int) -> None:
    """The words of ``casebase.similar_reranked``, before any model loads."""
    if (
        not isinstance(candidates, int)
        or isinstance(candidates, bool)
        or not k <= candidates <= max_k
    ):
        raise QueryError(f"rerank_candidates must be between k ({k}) and {max_k}, got {candidates}")


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
    ``min_distance`` of a hit already kept), so the top k is not one case k times.

    It stays in Python on purpose: it re-ranks the rows a SQL search already returned
    (filtered there by ``casebase._filter``), and it can only drop hits: the result is a
    subsequence of ``hits``, renumbered, never a row the filters did not pass. The
    client asks SQL for 3k hits to have some to drop."""
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
