"""`casebase tune` (issue #15): the calibration it stores, that searches read it, that the
command line shows and forgets it, and that it survives a downgrade and an upgrade."""

from __future__ import annotations

import json

import numpy as np
import pytest

from casebase.db import migrate
from casebase.db.connection import connect
from casebase.ingest.synthetic import load_set, make_set
from casebase.retrieval import tune as tuning
from casebase.retrieval.filters import Filters
from casebase.retrieval.search import search_vector
from tests.conftest import drop_database, make_database

N, DIM = 4000, 32


@pytest.fixture(scope="module")
def data():
    return make_set(N, DIM, seed=21)


@pytest.fixture(scope="module")
def url(db_url, data):
    with connect(db_url) as conn:
        load_set(conn, data)
        conn.commit()
    return db_url


@pytest.fixture(scope="module")
def tuned(url):
    with connect(url) as conn:
        report = tuning.tune(conn, modality="CXR", queries=8)
        conn.commit()
    return report


def _stored(conn, leaf: str) -> dict:
    row = conn.execute("SELECT value FROM casebase.setting WHERE key = %s", (f"tune.{leaf}",))
    return json.loads(row.fetchone()[0])


def test_tune_stores_what_it_measured(url, tuned):
    (leaf,) = tuned
    assert (leaf.space, leaf.modality, leaf.leaf) == ("synthetic", "CXR", "embedding_s1_cxr")
    n_cxr = sum(m == "CXR" for m in make_set(N, DIM, seed=21).modality)
    assert leaf.rows == n_cxr and leaf.images_per_study == 1.0 and leaf.queries == 8
    assert set(leaf.ef_search) == {"10", "100"}
    assert all(k_ef >= int(k) and k_ef in tuning.EF_GRID for k, k_ef in leaf.ef_search.items())
    assert all(r >= leaf.recall_target for r in leaf.recall.values()), leaf
    assert 200 <= leaf.exact_threshold <= leaf.rows
    assert leaf.trust_distance is not None and 0 < leaf.trust_distance <= 4, leaf
    assert leaf.filtered_oversample in tuning.OVERSAMPLE_GRID, leaf
    with connect(url) as conn:
        stored = _stored(conn, leaf.leaf)
    assert stored == json.loads(leaf.setting()), stored
    assert {
        "ef_search",
        "images_per_study",
        "exact_threshold",
        "filtered_oversample",
        "recall_target",
    } <= set(stored)


def test_a_filtered_graph_walk_asks_for_the_calibrated_share_more(url, data, tuned):
    """Revision 0011: under a filter the graph route's LIMIT is filtered_oversample x the
    rows wanted (pgvector's iterative scan stops once that many have passed); without a
    filter, or without a calibrated factor, it is the rows wanted. The function says
    which route and LIMIT it took at DEBUG level."""
    leaf = tuned[0].leaf
    q = data.vectors[5]
    said: list[str] = []
    with connect(url) as conn:
        conn.add_notice_handler(lambda d: said.append(d.message_primary or ""))
        conn.execute("SET client_min_messages = debug1")
        stored = _stored(conn, leaf) | {"exact_threshold": 0}
        cases = (
            ({"filtered_oversample": 3.0}, Filters(modality="CXR", sex="F"), "60"),
            ({"filtered_oversample": 1.5}, Filters(modality="CXR", sex="F"), "30"),
            ({"filtered_oversample": 3.0}, Filters(modality="CXR"), "20"),
            ({}, Filters(modality="CXR", sex="F"), "20"),
        )
        for extra, f, first in cases:
            setting = {k: v for k, v in stored.items() if k != "filtered_oversample"} | extra
            conn.execute(
                "UPDATE casebase.setting SET value = %s WHERE key = %s",
                (json.dumps(setting), f"tune.{leaf}"),
            )
            said.clear()
            hits = search_vector(conn, q, k=20, filters=f, space=None, exact=False)
            assert len(hits) == 20 and {h.route for h in hits} == {"hnsw"}, hits[:1]
            assert f"similar_to_vector: route hnsw, first limit {first}" in said, (extra, said)
            if f.sex:
                assert {h.sex for h in hits} == {"F"}
        conn.rollback()


def test_searches_read_the_calibration(url, data, tuned):
    """The leaf's threshold decides the route (over the installation's exact_threshold),
    and the calibrated search keeps its recall against exact."""
    leaf = tuned[0].leaf
    q = data.vectors[3]
    f = Filters(modality="CXR")
    with connect(url) as conn:
        conn.execute(
            "UPDATE casebase.setting SET value = '100000000' WHERE key = 'exact_threshold'"
        )
        stored = _stored(conn, leaf)
        for threshold, route in ((0, "hnsw"), (10**8, "exact-filtered")):
            conn.execute(
                "UPDATE casebase.setting SET value = %s WHERE key = %s",
                (json.dumps(stored | {"exact_threshold": threshold}), f"tune.{leaf}"),
            )
            hits = search_vector(conn, q, k=20, filters=f, space=None, exact=False)
            assert {h.route for h in hits} == {route}, (threshold, "the leaf's threshold wins")
        # A graph answer whose nearest study lies beyond the trust distance is answered
        # again exactly; one within it stands.
        for trust, route in ((0.0, "exact"), (4.0, "hnsw")):
            conn.execute(
                "UPDATE casebase.setting SET value = %s WHERE key = %s",
                (
                    json.dumps(stored | {"exact_threshold": 0, "trust_distance": trust}),
                    f"tune.{leaf}",
                ),
            )
            hits = search_vector(conn, q + 0.5, k=20, filters=f, space=None, exact=False)
            assert {h.route for h in hits} == {route}, (trust, hits[0])
        conn.rollback()
        recalls = []
        for qi in np.random.default_rng(4).choice(N, size=15, replace=False):
            f = Filters(modality="CXR")
            got = search_vector(conn, data.vectors[qi], k=50, filters=f, space=None, exact=False)
            want = search_vector(conn, data.vectors[qi], k=50, filters=f, space=None, exact=True)
            recalls.append(len({h.study_id for h in got} & {h.study_id for h in want}) / 50)
    assert np.mean(recalls) >= 0.95, recalls


def test_bad_options_are_one_line_errors(url):
    from casebase.errors import QueryError

    with connect(url) as conn:
        with pytest.raises(QueryError, match="recall target must be in"):
            tuning.tune(conn, target=1.5)
        with pytest.raises(QueryError, match="holds no MR"):
            tuning.tune(conn, modality="MR")
        conn.rollback()


def test_the_command_line_tunes_shows_and_forgets(use_db, url, tuned, capsys):
    from casebase.cli import main

    assert main(["tune", "--modality", "KXR", "--queries", "4"]) == 0
    out = capsys.readouterr().out
    assert "synthetic/KXR (embedding_s1_kxr)" in out and "ef_search k=10" in out, out
    assert main(["tune", "--show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {"embedding_s1_cxr", "embedding_s1_kxr"}, shown
    assert main(["tune", "--reset"]) == 0
    assert capsys.readouterr().out.strip() == "forgot 2 calibration(s)"
    assert main(["tune", "--show"]) == 0
    assert "no calibration stored" in capsys.readouterr().out
    # Put the CXR calibration back for the tests after this one.
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO casebase.setting (key, value) VALUES (%s, %s)",
            (f"tune.{tuned[0].leaf}", tuned[0].setting()),
        )
        conn.commit()


def test_a_small_leaf_is_always_answered_exactly(url):
    with connect(url) as conn:
        load_set(
            conn, make_set(150, DIM, seed=5, modalities=("MR",), prefix="SMALL"), batch="small"
        )
        (leaf,) = tuning.tune(conn, modality="MR", queries=4)
        conn.rollback()
    assert (leaf.rows, leaf.exact_threshold) == (150, 150), leaf
    assert leaf.filtered_oversample == 1.0, "no filtered search takes the graph route"


def test_a_calibration_survives_downgrade_and_upgrade(server_url):
    url = make_database(server_url, "t_tune_down")
    try:
        with connect(url) as conn:
            load_set(conn, make_set(600, 8, seed=2, modalities=("CXR",)))
            (leaf,) = tuning.tune(conn, queries=4)
            conn.commit()
        migrate.downgrade(url, "0009")
        migrate.upgrade(url)
        with connect(url) as conn:
            assert tuning.tuned(conn) == {leaf.leaf: json.loads(leaf.setting())}
            hits = search_vector(conn, np.ones(8), k=5, filters=Filters(), space=None, exact=False)
            assert len(hits) == 5
    finally:
        drop_database(server_url, "t_tune_down")
