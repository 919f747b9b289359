"""Revision 0010's exact route (issue #15): it ranks by the half-precision copy in the
covering index and re-ranks the nearest in full precision, and must stay exact; the flag
mask only narrows the scan; the graph route asks for more images when studies have
several, and answers exactly when the graph falls short."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from casebase.db.connection import connect
from casebase.ingest.synthetic import load_set, make_set
from casebase.retrieval.filters import Filters
from casebase.retrieval.search import search_vector

N, DIM = 3000, 48
KNOWN = (
    "portable",
    "supine",
    "underexposed",
    "overexposed",
    "low_contrast",
    "low_resolution",
    "burned_in_text",
)


@pytest.fixture(scope="module")
def data():
    return make_set(N, DIM, seed=15)


@pytest.fixture(scope="module")
def conn(db_url, data):
    with connect(db_url) as c:
        load_set(c, data, space_name="compact")
        c.execute("ANALYZE casebase.embedding")
        c.commit()
        yield c


def brute_force(data, q, k, keep) -> tuple[list[str], np.ndarray]:
    """Cosine distances in float64 (the stored vectors are unit length)."""
    idx = np.flatnonzero(keep)
    q = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    dist = 1.0 - data.vectors[idx].astype(np.float64) @ q
    order = np.lexsort((np.array(data.study_ids)[idx], dist))[:k]
    return [data.study_ids[idx[i]] for i in order], dist[order]


def cxr(data, **f) -> np.ndarray:
    keep = np.array([m == "CXR" for m in data.modality])
    if "sex" in f:
        keep &= np.array([s == f["sex"] for s in data.sex])
    if "age" in f:
        keep &= (data.age >= f["age"][0]) & (data.age <= f["age"][1])
    for flag in f.get("exclude_flags", ()):
        keep &= np.array([flag not in fl for fl in data.flags])
    for flag in f.get("require_flags", ()):
        keep &= np.array([flag in fl for fl in data.flags])
    return keep


@pytest.mark.parametrize(
    "flt",
    [
        {},
        {"sex": "M", "age": (30.0, 60.0)},
        {"exclude_flags": ("portable",)},
        {"require_flags": ("burned_in_text",), "sex": "F"},
        {"age": (50.0, 52.0)},  # fewer rows than k: every one of them, in order
    ],
    ids=lambda f: ",".join(f) or "none",
)
@pytest.mark.parametrize("k", [1, 20, 150])
def test_the_half_precision_route_is_exact(conn, data, flt, k):
    """Same studies, same order, full-precision distances as NumPy, on both exact routes."""
    rng = np.random.default_rng(k)
    keep = cxr(data, **flt)
    for qi in rng.choice(N, size=5, replace=False):
        q = data.vectors[qi] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        want, dist = brute_force(data, q, k, keep)
        for exact in (True, False):
            conn.execute(
                "UPDATE casebase.setting SET value = %s WHERE key = 'exact_threshold'",
                (str(10**9),),
            )
            hits = search_vector(
                conn, q, k=k, filters=Filters(modality="CXR", **flt), space="compact", exact=exact
            )
            conn.rollback()
            assert [h.study_id for h in hits] == want, (flt, k, exact)
            np.testing.assert_allclose([h.distance for h in hits], dist, atol=2e-6)
            assert {h.route for h in hits} <= {"exact" if exact else "exact-filtered"}


def test_a_leaf_over_1024_dimensions_keeps_the_key_fetch_route(db_url):
    """No half-precision copy there (too big for a B-tree row): still exact."""
    big = make_set(200, 1100, seed=3, modalities=("CXR",), prefix="WIDE")
    with connect(db_url) as conn:
        load_set(conn, big, space_name="wide", batch="wide")
        conn.commit()
        assert conn.execute(
            "SELECT count(*) FILTER (WHERE vec_half IS NULL), count(*) FROM casebase.embedding "
            "WHERE space_id = (SELECT space_id FROM casebase.embedding_space WHERE name = 'wide')"
        ).fetchone() == (200, 200)
        q = big.vectors[5]
        for flt in ({}, {"sex": "F"}):
            hits = search_vector(
                conn, q, k=30, filters=Filters(modality="CXR", **flt), space="wide", exact=True
            )
            keep = np.ones(200, dtype=bool) if not flt else np.array([s == "F" for s in big.sex])
            assert [h.study_id for h in hits] == brute_force(big, q, 30, keep)[0]
        conn.rollback()


def test_flag_mask_and_masks_agree_with_the_array_conditions(conn):
    """For every set of known flags (and an unknown one), a row passes the mask condition
    whenever it passes the array conditions, for every require/exclude pair."""
    flag_sets = [list(c) for r in range(3) for c in itertools.combinations(KNOWN, r)]
    flag_sets += [["custom_flag"], ["custom_flag", "portable"], list(KNOWN)]
    filters = [
        ([], []),
        (["portable"], []),
        ([], ["portable"]),
        (["supine"], ["burned_in_text"]),
        (["custom_flag"], []),
        ([], ["custom_flag", "low_contrast"]),
        (["portable", "overexposed"], ["low_resolution"]),
    ]
    rows = conn.execute(
        "SELECT f.flags, r.req, r.exc, "
        "casebase._flag_mask(f.flags) = ANY (coalesce(casebase._flag_masks(r.req, r.exc), "
        "ARRAY[casebase._flag_mask(f.flags)])), "
        "f.flags @> r.req AND NOT (f.flags && r.exc) "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS s(j, i), "
        "LATERAL (SELECT ARRAY(SELECT json_array_elements_text(s.j::json)) AS flags) f, "
        "unnest(%s::text[]) AS fj(x), "
        "LATERAL (SELECT ARRAY(SELECT json_array_elements_text((fj.x::json)->0)) AS req, "
        "ARRAY(SELECT json_array_elements_text((fj.x::json)->1)) AS exc) r",
        ([json.dumps(f) for f in flag_sets], [json.dumps(f) for f in filters]),
    ).fetchall()
    conn.rollback()
    assert len(rows) == len(flag_sets) * len(filters)
    broken = [r for r in rows if r[4] and not r[3]]
    assert broken == [], broken
    # The mask does narrow: some rows fail it (else it would be useless).
    assert any(not r[3] for r in rows)


def test_stored_flag_mask_is_the_function_of_the_row(conn):
    bad = conn.execute(
        "SELECT count(*) FROM casebase.embedding WHERE flag_mask <> casebase._flag_mask(flags) "
        "OR (vec_half IS NULL) <> (vector_dims(vec) > 1024)"
    ).fetchone()[0]
    conn.rollback()
    assert bad == 0


def test_the_covering_index_answers_a_flag_filter_by_its_key(conn):
    """The flag mask is an index condition of the leaf's covering index, planned the way
    similar_to_vector plans it (EXECUTE ... USING the filter record)."""
    conn.execute(
        "CREATE FUNCTION pg_temp.plan_of(f casebase.search_filter) RETURNS SETOF text "
        "LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off AS $$ BEGIN "
        "RETURN QUERY EXECUTE format('EXPLAIN SELECT e.image_pk, e.vec_half FROM %s e "
        "WHERE %s', f.leaf, f.predicate) USING f; END $$"
    )
    rows = conn.execute(
        "SELECT pg_temp.plan_of(casebase._filter(k => 10, space => 'compact', "
        "modality => 'CXR', sex => 'F', age_min => NULL, age_max => NULL, "
        "exclude_flags => ARRAY['portable'], exclude_patient => NULL, views => NULL, "
        "require_flags => NULL, date_from => NULL, date_to => NULL, batches => NULL, "
        "exclude_study => NULL, attributes => NULL))"
    ).fetchall()
    conn.rollback()
    plan = "\n".join(r[0] for r in rows)
    assert "Index Only Scan using" in plan and "_cover" in plan, plan
    cond = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "flag_mask = ANY" in cond and "sex =" in cond, plan


def test_several_images_per_study_still_give_k_studies(db_url):
    """A calibration that says one image per study, on studies with three: the graph route
    asks again for more images (or answers exactly), never returns fewer than k."""
    data = make_set(600, 16, seed=9, modalities=("CXR",), prefix="MULTI")
    with connect(db_url) as conn:
        space = load_set(conn, data, space_name="multi", batch="multi")
        # Two more images per study (copies moved a little), as ingest writes them.
        conn.execute(
            "INSERT INTO casebase.embedding (space_id, modality, image_pk, study_pk, study_id, "
            "patient_key, age, sex, view, flags, study_date, batch, vec) "
            "SELECT space_id, modality, image_pk + 10000000 * n, study_pk, study_id, patient_key, "
            "age, sex, view, flags, study_date, batch, vec "
            "FROM casebase.embedding, generate_series(1, 2) n WHERE space_id = %s",
            (space.space_id,),
        )
        leaf = f"embedding_s{space.space_id}_cxr"
        conn.execute(
            "INSERT INTO casebase.setting (key, value) VALUES (%s, %s)",
            (
                f"tune.{leaf}",
                json.dumps(
                    {
                        "images_per_study": 1,
                        "exact_threshold": 0,
                        "ef_search": {"10": 40, "100": 100},
                    }
                ),
            ),
        )
        conn.execute(f"ANALYZE casebase.{leaf}")
        for qi in range(5):
            hits = search_vector(
                conn, data.vectors[qi], k=50, filters=Filters(), space="multi", exact=False
            )
            exact = search_vector(
                conn, data.vectors[qi], k=50, filters=Filters(), space="multi", exact=True
            )
            assert len(hits) == 50 and len({h.study_id for h in hits}) == 50
            assert len({h.study_id for h in hits} & {h.study_id for h in exact}) >= 45
        conn.rollback()
