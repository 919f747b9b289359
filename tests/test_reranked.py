"""Two-stage retrieval (issue #18): candidates from one space, order from another, from
Python, the CLI and SQL. The second space is a real checkpoint (tests/second_space.py)
back-filled from tiny-random, with a few images left out of it (a back-fill in
progress). Checked against numpy: the candidates are the first space's search, each is
re-scored by its nearest image in the second space, the missing ones come last."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

import casebase
from casebase.db.connection import connect
from casebase.errors import QueryError

STUDY = "DEMO-C0004"
SECOND = "second"
MISSING = 6  # chest images left out of the second space


@pytest.fixture(scope="module")
def url(db_url, tmp_path_factory) -> str:
    from casebase.cohort import generate
    from casebase.ingest.pipeline import IngestOptions, ingest
    from tests.second_space import add_second_space

    manifest = generate(tmp_path_factory.mktemp("cohort18r"), n_chest=40, n_knee=10, seed=19)
    options = IngestOptions(batch="cohort", model="tiny-random", workers=0, progress=False)
    assert ingest(manifest, options, url=db_url).loaded == 50
    assert add_second_space(db_url, tmp_path_factory.mktemp("second")) == 0
    with connect(db_url) as conn:  # a back-fill in progress: some images not there yet
        conn.execute(
            "DELETE FROM casebase.embedding WHERE space_id = (SELECT space_id FROM "
            "casebase.spaces WHERE space = %s) AND image_pk IN (SELECT image_id FROM "
            "casebase.embeddings WHERE space = %s AND modality = 'CXR' AND study_id <> %s "
            "ORDER BY image_id DESC LIMIT %s)",
            (SECOND, SECOND, STUDY, MISSING),
        )
        conn.commit()
    return db_url


@pytest.fixture(scope="module")
def client(url):
    with casebase.connect(url) as c:
        yield c


@pytest.fixture(scope="module")
def vectors(url) -> dict[str, dict[str, list[np.ndarray]]]:
    """space → study id → its chest vectors there."""
    from casebase.retrieval.search import as_array

    with connect(url) as conn:
        rows = conn.execute(
            "SELECT space, study_id, vec FROM casebase.embeddings WHERE modality = 'CXR'"
        ).fetchall()
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for space, sid, vec in rows:
        out.setdefault(space, {}).setdefault(sid, []).append(as_array(vec))
    return out


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from casebase.cli import main

    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _sql(url: str, sql: str, params=()) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------- order


def test_reranking_by_the_same_space_keeps_the_plain_order(client, url, use_db, capsys):
    plain = client.search(study_id=STUDY, k=10)
    same = client.search(study_id=STUDY, k=10, rerank_space="tiny-random", rerank_candidates=30)
    assert [(h.study_id, h.distance, h.image_id) for h in same] == [
        (h.study_id, h.distance, h.image_id) for h in plain
    ]
    assert {h.route for h in same} == {f"reranked/{h.route}" for h in plain}
    by_study = _sql(
        url,
        "SELECT study_id, distance FROM casebase.similar_cases_reranked(%s, 'tiny-random', "
        "k => 10, rerank_candidates => 10)",
        (STUDY,),
    )
    by_vector = _sql(
        url,
        "SELECT r.study_id, r.distance FROM casebase.query_image(%s) qi, "
        "casebase.similar_reranked(qi.vec, qi.vec, 'tiny-random', k => 10, modality => 'CXR', "
        "exclude_study => %s, exclude_patient => qi.patient_key) r",
        (STUDY, STUDY),
    )
    assert by_study == by_vector == [(h.study_id, h.distance) for h in plain]
    code, out, err = _cli(
        ["search", "--study", STUDY, "-k", "10", "--json", "--rerank-space", "tiny-random"], capsys
    )
    assert code == 0, err
    assert [h["study_id"] for h in json.loads(out)] == [h.study_id for h in plain]


def test_candidates_are_rescored_by_their_nearest_image_in_the_second_space(
    client, url, vectors, use_db, capsys
):
    n, k = 20, 12
    first = client.search(study_id=STUDY, k=n, exact=True)
    q2 = vectors[SECOND][STUDY][0]
    scored = {
        h.study_id: min(1 - float(v @ q2) for v in vectors[SECOND][h.study_id])
        for h in first
        if h.study_id in vectors[SECOND]
    }
    missing = [h.study_id for h in first if h.study_id not in scored]
    assert 0 < len(missing) < n - k, missing  # the back-fill gap reaches the candidates
    want = [sid for sid, _ in sorted(scored.items(), key=lambda i: (i[1], i[0]))] + missing
    hits = client.search(study_id=STUDY, k=k, rerank_space=SECOND, rerank_candidates=n, exact=True)
    assert [h.study_id for h in hits] == want[:k], (hits, want)
    assert [h.rank for h in hits] == list(range(1, k + 1))
    assert np.allclose([h.distance for h in hits[: len(scored)]], sorted(scored.values())[:k])
    assert {h.route for h in hits} == {"reranked/exact"}
    # All candidates: the ones the second space lacks come last, in first-stage order, at
    # their first-stage image and distance.
    every = client.search(study_id=STUDY, k=n, rerank_space=SECOND, rerank_candidates=n, exact=True)
    tail = every[len(scored) :]
    assert [h.study_id for h in tail] == missing
    assert {h.route for h in tail} == {"first-stage/exact"}
    firsts = {h.study_id: h for h in first}
    assert [(h.distance, h.image_id) for h in tail] == [
        (firsts[s].distance, firsts[s].image_id) for s in missing
    ]
    code, out, err = _cli(
        [
            "search",
            "--study",
            STUDY,
            "-k",
            str(k),
            "--json",
            "--exact",
            "--rerank-space",
            SECOND,
            "--rerank-candidates",
            str(n),
        ],
        capsys,
    )
    assert code == 0, err
    assert [h["study_id"] for h in json.loads(out)] == want[:k]


def test_an_image_query_is_reranked_with_its_vector_in_each_space(client, url):
    from pgvector import Vector

    from casebase.retrieval.encode import image_vector

    uri = _sql(url, "SELECT uri FROM casebase.images WHERE study_id = %s", (STUDY,))[0][0]
    hits = client.search(image=uri, k=8, modality="CXR", rerank_space=SECOND)
    q1 = image_vector(client.space("tiny-random"), uri)
    q2 = image_vector(client.space(SECOND), uri)
    sql = _sql(
        url,
        "SELECT study_id, distance, route FROM casebase.similar_reranked(%s, %s, %s, k => 8, "
        "modality => 'CXR')",
        (Vector(q1), Vector(q2), SECOND),
    )
    assert [(h.study_id, h.distance, h.route) for h in hits] == sql
    assert hits[0].study_id == STUDY and hits[0].distance < 1e-5  # its own film, in space 2


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("space", "candidates", "message"),
    [
        ("nope", 200, "unknown embedding space 'nope'"),
        (SECOND, 5, "rerank_candidates must be between k (10) and 1000, got 5"),
        (SECOND, 1001, "rerank_candidates must be between k (10) and 1000, got 1001"),
    ],
)
def test_bad_rerank_input_is_one_line_everywhere(
    client, url, use_db, capsys, space, candidates, message
):
    with pytest.raises(QueryError) as python:
        client.search(study_id=STUDY, k=10, rerank_space=space, rerank_candidates=candidates)
    assert str(python.value).startswith(message), python.value
    code, out, err = _cli(
        [
            "search",
            "--study",
            STUDY,
            "-k",
            "10",
            "--rerank-space",
            space,
            "--rerank-candidates",
            str(candidates),
        ],
        capsys,
    )
    assert code == 1 and out == "" and err.startswith(f"casebase: error: {message}"), err
    assert err.count("\n") == 1
    for sql in (
        "SELECT * FROM casebase.similar_cases_reranked(%s, %s, k => 10, rerank_candidates => %s)",
        "SELECT r.* FROM casebase.query_image(%s) qi, casebase.similar_reranked(qi.vec, qi.vec, "
        "%s, k => 10, modality => 'CXR', rerank_candidates => %s) r",
    ):
        with connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(sql, (STUDY, space, candidates))
        assert info.value.sqlstate == "22023" and info.value.diag.message_primary == message


def test_other_bad_rerank_calls_are_one_line_errors(client, url):
    for sql, message in [
        (
            "SELECT * FROM casebase.similar_cases_reranked(%s, NULL)",
            "rerank_space is required: the space whose vectors re-score the candidates",
        ),
        (
            "SELECT r.* FROM casebase.query_image(%s) qi, casebase.similar_reranked(qi.vec, "
            "'[1,2]', 'second', modality => 'CXR') r",
            "the rerank vector has 2 dimensions; space second has 64",
        ),
    ]:
        with connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(sql, (STUDY,))
        assert info.value.diag.message_primary == message, info.value
    # A query study the back-fill has not reached yet.
    (absent,) = _sql(
        url,
        "SELECT study_id FROM casebase.embeddings WHERE space = 'tiny-random' AND modality = "
        "'CXR' EXCEPT SELECT study_id FROM casebase.embeddings WHERE space = 'second' "
        "ORDER BY 1 LIMIT 1",
    )[0]
    with pytest.raises(QueryError) as info:
        client.search(study_id=absent, rerank_space=SECOND)
    assert str(info.value) == f"study '{absent}' has no image in space second"
    with pytest.raises(QueryError, match="a vector query cannot be re-ranked"):
        client.search(vector=np.ones(64, np.float32), modality="CXR", rerank_space=SECOND)
    with pytest.raises(QueryError, match="rerank_space works with an image, study_id or vector"):
        client.search(text="effusion", modality="CXR", rerank_space=SECOND)
