"""Retrieval against a real PostgreSQL: exact = NumPy brute force, recall, filters, isolation."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from casebase.db.connection import connect
from casebase.errors import QueryError
from casebase.ingest.synthetic import load_set, make_set
from casebase.retrieval.filters import Filters
from casebase.retrieval.search import search_study, search_vector

N, DIM = 4000, 32


@pytest.fixture(scope="module")
def data():
    return make_set(N, DIM, seed=7)


@pytest.fixture(scope="module")
def conn(db_url, data):
    with connect(db_url) as c:
        load_set(c, data)
        # Force the HNSW route at this small size so both routes are exercised.
        c.execute("UPDATE casebase.setting SET value = '300' WHERE key = 'exact_threshold'")
        c.execute("ANALYZE casebase.embedding")
        c.commit()
        yield c


def brute_force(
    data, q, k, *, modality, sex=None, age=None, exclude_flags=(), patient=None, exclude_id=None
):
    from casebase.imaging.values import patient_key

    mask = np.array([m == modality for m in data.modality])
    if sex:
        mask &= np.array([s == sex for s in data.sex])
    if age:
        mask &= (data.age >= age[0]) & (data.age <= age[1])
    if exclude_flags:
        mask &= np.array([not (set(f) & set(exclude_flags)) for f in data.flags])
    if exclude_id is not None:
        mask &= np.array([s != exclude_id for s in data.study_ids])
    if patient is not None:
        mask &= np.array([p != patient for p in data.patient])
    idx = np.flatnonzero(mask)
    dist = 1.0 - data.vectors[idx] @ q
    order = np.lexsort((np.array(data.study_ids)[idx], dist))[:k]
    _ = patient_key
    return [data.study_ids[idx[i]] for i in order], dist[order]


FILTERS = [
    {},
    {"sex": "F"},
    {"sex": "M", "age": (40.0, 70.0)},
    {"exclude_flags": ("portable",)},
    {"sex": "F", "age": (20.0, 35.0), "exclude_flags": ("portable", "burned_in_text")},
    {"age": (80.0, 100.0)},
]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_exact_equals_numpy_brute_force(conn, data, flt):
    rng = np.random.default_rng(1)
    for qi in rng.choice(N, size=8, replace=False):
        q = data.vectors[qi]
        hits = search_vector(
            conn,
            q,
            k=25,
            filters=Filters(
                modality="CXR",
                **flt,
            ),
            space=None,
            exact=True,
        )
        want_ids, want_d = brute_force(data, q, 25, modality="CXR", **flt)
        assert [h.study_id for h in hits] == want_ids
        np.testing.assert_allclose([h.distance for h in hits], want_d, atol=1e-5)
        assert all(h.route == "exact" for h in hits)


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_default_search_recall_and_filters_hold(conn, data, flt):
    rng = np.random.default_rng(2)
    recalls, routes = [], set()
    for qi in rng.choice(N, size=10, replace=False):
        q = data.vectors[qi]
        hits = search_vector(
            conn, q, k=20, filters=Filters(modality="CXR", **flt), space=None, exact=False
        )
        want, _ = brute_force(data, q, 20, modality="CXR", **flt)
        recalls.append(len({h.study_id for h in hits} & set(want)) / max(1, len(want)))
        routes |= {h.route for h in hits}
        for h in hits:
            assert h.modality == "CXR"
            if "sex" in flt:
                assert h.sex == flt["sex"]
            if "age" in flt:
                assert flt["age"][0] <= h.age <= flt["age"][1]
            assert not set(h.flags) & set(flt.get("exclude_flags", ()))
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert np.mean(recalls) >= 0.95, (recalls, routes)


def test_hnsw_route_is_used_for_broad_filters(conn, data):
    hits = search_vector(
        conn, data.vectors[0], k=10, filters=Filters(modality="CXR"), space=None, exact=False
    )
    assert {h.route for h in hits} == {"hnsw"}
    narrow = search_vector(
        conn,
        data.vectors[0],
        k=10,
        filters=Filters(modality="CXR", sex="F", age=(90.0, 100.0)),
        space=None,
        exact=False,
    )
    assert {h.route for h in narrow} <= {"exact-filtered"}


def test_modality_isolation(conn, data):
    for qi in range(20):
        for modality in ("CXR", "KXR"):
            hits = search_vector(
                conn,
                data.vectors[qi],
                k=30,
                filters=Filters(modality=modality),
                space=None,
                exact=False,
            )
            assert hits and {h.modality for h in hits} == {modality}
            ids = set(np.array(data.study_ids)[np.array(data.modality) == modality])
            assert {h.study_id for h in hits} <= ids


def test_study_query_excludes_itself_and_its_patient(conn, data):
    from casebase.imaging.values import patient_key  # noqa: F401

    i = next(i for i in range(N) if data.modality[i] == "CXR")
    hits = search_study(conn, data.study_ids[i], k=30, filters=Filters(), space=None, exact=True)
    same_patient = {data.study_ids[j] for j in range(N) if data.patient[j] == data.patient[i]}
    assert data.study_ids[i] not in {h.study_id for h in hits}
    assert not ({h.study_id for h in hits} & same_patient)
    want, _ = brute_force(
        data,
        data.vectors[i],
        30,
        modality="CXR",
        patient=data.patient[i],
        exclude_id=data.study_ids[i],
    )
    assert [h.study_id for h in hits] == want
    keep = search_study(
        conn,
        data.study_ids[i],
        k=30,
        filters=Filters(exclude_same_patient=False),
        space=None,
        exact=True,
    )
    assert data.study_ids[i] not in {h.study_id for h in keep}


def test_empty_result_is_valid(conn, data):
    hits = search_vector(
        conn,
        data.vectors[0],
        k=10,
        filters=Filters(modality="CXR", require_flags=("no_such_flag",)),
        space=None,
        exact=False,
    )
    assert hits == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c, d: search_study(c, "NOPE-1", k=5, filters=Filters(), space=None, exact=False),
            "unknown study id 'NOPE-1'",
        ),
        (
            lambda c, d: search_vector(
                c, np.ones(7), k=5, filters=Filters(modality="CXR"), space=None, exact=False
            ),
            "the query vector has 7 dimensions; space synthetic has 32",
        ),
        (
            lambda c, d: search_vector(
                c, d.vectors[0], k=5, filters=Filters(modality="CXR"), space="nope", exact=False
            ),
            "unknown embedding space 'nope'",
        ),
        (
            lambda c, d: search_vector(
                c, d.vectors[0], k=5, filters=Filters(modality="CT"), space=None, exact=False
            ),
            "no 'CT' studies in space synthetic",
        ),
        (
            lambda c, d: search_vector(
                c, d.vectors[0], k=5, filters=Filters(), space=None, exact=False
            ),
            "modality is required",
        ),
        (
            lambda c, d: search_vector(
                c, d.vectors[0], k=0, filters=Filters(modality="CXR"), space=None, exact=False
            ),
            "k must be between 1 and 1000, got 0",
        ),
        (
            lambda c, d: search_vector(
                c, d.vectors[0], k=5000, filters=Filters(modality="CXR"), space=None, exact=False
            ),
            "k must be between 1 and 1000, got 5000",
        ),
        (
            lambda c, d: search_vector(
                c,
                d.vectors[0],
                k=5,
                filters=Filters(modality="CXR", batches=("x' OR 1=1 --",)),
                space=None,
                exact=False,
            ),
            None,
        ),
    ],
)
def test_bad_queries_are_one_line_errors(conn, data, call, message):
    if message is None:  # an injection attempt is just a value that matches nothing
        assert call(conn, data) == []
        return
    with pytest.raises(QueryError) as info:
        call(conn, data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_filter_values_are_validated_before_sql():
    with pytest.raises(QueryError, match="impossible age range 80-20"):
        Filters(age=(80, 20))
    with pytest.raises(QueryError, match="sex must be F, M or O"):
        Filters(sex="F' OR '1'='1")
    with pytest.raises(QueryError, match="unknown modality"):
        Filters(modality="cxr; DROP TABLE casebase.study")
    with pytest.raises(QueryError, match="invalid flag"):
        Filters(exclude_flags=("portable'--",))


def test_sql_functions_as_analyst(conn, data):
    i = next(i for i in range(N) if data.modality[i] == "KXR")
    conn.execute("SET ROLE casebase_analyst")
    try:
        rows = conn.execute(
            "SELECT rank, study_id, distance FROM casebase.similar_cases(%s, k => 10, sex => 'F')",
            (data.study_ids[i],),
        ).fetchall()
        assert len(rows) == 10 and [r[0] for r in rows] == list(range(1, 11))
        joined = conn.execute(
            "SELECT count(*) FROM casebase.similar_cases(%s, k => 10) s "
            "JOIN casebase.studies USING (study_id)",
            (data.study_ids[i],),
        ).fetchone()[0]
        assert joined == 10
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM casebase.embedding_s1_cxr LIMIT 1")
    finally:
        conn.rollback()


def test_studies_with_many_images_rank_by_their_best_image(conn, data):
    """The exact route keeps the 4k nearest images; when they hold fewer than k studies
    (many images per study) it falls back to every image, so the answer stays exact."""
    from casebase.db.spaces import get_space
    from casebase.ingest import load
    from casebase.ingest.studies import StudyInput

    rng = np.random.default_rng(5)
    q = data.vectors[11]
    space = get_space(conn, "synthetic")
    studies = []
    for s in range(3):
        study = StudyInput(
            study_id=f"MULTI-{s}",
            patient_id=f"MP{s}",
            modality="CXR",
            body_part=None,
            view="PA",
            age=50.0,
            sex="F",
            study_date=None,
            flags=(),
            findings=None,
            impression=None,
            report=None,
            accession=None,
            attributes={},
        )
        images = []
        for i in range(10):
            v = q + 0.01 * (s + 1) * rng.normal(size=q.shape).astype(np.float32)
            images.append(
                load.PreparedImage(
                    uri=f"synthetic://multi/{s}/{i}",
                    sha256=f"m{s}{i}",
                    size_bytes=0,
                    width=None,
                    height=None,
                    view="PA",
                    flags=(),
                    quality={},
                    vector=v / np.linalg.norm(v),
                )
            )
        studies.append(
            load.PreparedStudy(
                study=study,
                patient_key=f"mp{s}",
                content_sha256=f"multi{s}",
                flags=(),
                sanitized=None,
                raw_report=None,
                images=images,
            )
        )
    with conn.transaction():
        load.write_chunk(conn, batch="synthetic", space=space, studies=studies, rejects=[])
    try:
        hits = search_vector(
            conn,
            q,
            k=5,
            filters=Filters(modality="CXR"),
            space=None,
            exact=True,
            exclude_study=data.study_ids[11],
        )
        assert [h.study_id for h in hits[:3]] == ["MULTI-0", "MULTI-1", "MULTI-2"]
        assert len(hits) == 5 and len({h.study_id for h in hits}) == 5
        mask = np.array([m == "CXR" for m in data.modality])
        mask[11] = False
        single = np.sort(1.0 - data.vectors[mask] @ q)[:2]
        np.testing.assert_allclose([h.distance for h in hits[3:]], single, atol=1e-5)
    finally:
        with conn.transaction():
            conn.execute("DELETE FROM casebase.embedding WHERE study_id LIKE 'MULTI-%'")
            conn.execute("DELETE FROM casebase.study WHERE study_id LIKE 'MULTI-%'")
