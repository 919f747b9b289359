"""Composed queries (issue #18): "cases like this film, but with X" from Python, the CLI
and SQL, on a generated cohort in tiny-random (random weights: the mechanics, not the
lift; benchmarks/composed.py measures that). The rule is checked against numpy, w = 0
against the plain search, and each bad input is a one-line error everywhere."""

from __future__ import annotations

import json
import math

import numpy as np
import psycopg
import pytest
from pgvector import Vector

import casebase
from casebase.db.connection import connect
from casebase.errors import ModelError, QueryError
from casebase.retrieval import compose

STUDY = "DEMO-C0003"
PROMPT = "pleural effusion"


@pytest.fixture(scope="module")
def url(db_url, tmp_path_factory) -> str:
    from casebase.cohort import generate
    from casebase.ingest.pipeline import IngestOptions, ingest

    manifest = generate(tmp_path_factory.mktemp("cohort18c"), n_chest=40, n_knee=10, seed=18)
    options = IngestOptions(batch="cohort", model="tiny-random", workers=0, progress=False)
    assert ingest(manifest, options, url=db_url).loaded == 50
    return db_url


@pytest.fixture(scope="module")
def client(url):
    with casebase.connect(url) as c:
        yield c


@pytest.fixture(scope="module")
def chest(url) -> dict[str, tuple[list[np.ndarray], str | None]]:
    """study id → (its chest vectors, its patient key), from the analyst views."""
    from casebase.retrieval.search import as_array

    with connect(url) as conn:
        rows = conn.execute(
            "SELECT e.study_id, e.vec, s.patient_key FROM casebase.embeddings e "
            "JOIN casebase.studies s USING (study_id) WHERE e.modality = 'CXR'"
        ).fetchall()
    out: dict[str, tuple[list[np.ndarray], str | None]] = {}
    for sid, vec, patient in rows:
        out.setdefault(sid, ([], patient))[0].append(as_array(vec))
    return out


def _text_vectors(client, *texts: str) -> list[np.ndarray]:
    return compose.prompt_vectors(client.space(), list(texts))


def _v(v) -> Vector:
    return Vector(np.asarray(v, np.float32))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _sql(conn, sql: str, params=()) -> list[tuple]:
    rows = conn.execute(sql, params).fetchall()
    conn.rollback()
    return rows


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from casebase.cli import main

    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- the rule


def _cli_modified_ids(weight: str, capsys) -> list[str]:
    """The study ids of `casebase search --study STUDY --modify PROMPT` at ``weight``."""
    args = ["search", "--study", STUDY, "-k", "10", "--json", "--modify", PROMPT]
    code, out, err = _cli([*args, "--modify-weight", weight], capsys)
    assert code == 0, err
    return [h["study_id"] for h in json.loads(out)]


def test_weight_zero_is_the_plain_search_in_python_sql_and_cli(client, url, use_db, capsys):
    plain = client.search(study_id=STUDY, k=10)
    zero = client.search(study_id=STUDY, k=10, modify=PROMPT, modify_weight=0)
    assert [(h.study_id, h.distance) for h in zero] == [(h.study_id, h.distance) for h in plain]
    assert {h.route for h in zero} == {f"composed/{h.route}" for h in plain}, zero
    m, n = _text_vectors(client, PROMPT, compose.NEUTRAL_PROMPT)
    with connect(url) as conn:
        q = _sql(conn, "SELECT vec FROM casebase.query_image(%s)", (STUDY,))[0][0]
        composed = _sql(
            conn,
            "SELECT study_id, distance FROM casebase.similar_composed(%s, %s, %s, 0, k => 10, "
            "modality => 'CXR', exclude_study => %s)",
            (q, _v(m), _v(n), STUDY),
        )
        direct = _sql(
            conn,
            "SELECT study_id, distance FROM casebase.similar_to_vector(%s, k => 10, "
            "modality => 'CXR', exclude_study => %s)",
            (q, STUDY),
        )
    assert composed == direct and len(direct) == 10
    assert _cli_modified_ids("0", capsys) == [h.study_id for h in plain]


@pytest.mark.parametrize("weight", [0.5, 3.0, 10.0])
def test_the_rule_is_normalize_q_plus_w_times_text_step(client, chest, weight):
    """SQL's hits are numpy's exact top 10 for normalize(q + w (t(m) - t(n))), each at
    its best image's distance; the query study and its patient are left out."""
    m, n = _text_vectors(client, PROMPT, compose.NEUTRAL_PROMPT)
    vecs, patient = chest[STUDY]
    q = vecs[0]
    want = _unit(_unit(q) + weight * (_unit(m) - _unit(n)))
    best = {
        sid: min(1 - float(v @ want) for v in vs)
        for sid, (vs, p) in chest.items()
        if sid != STUDY and (patient is None or p != patient)
    }
    ranked = sorted(best.items(), key=lambda item: (item[1], item[0]))[:10]
    hits = client.search(study_id=STUDY, k=10, modify=PROMPT, modify_weight=weight, exact=True)
    assert [h.study_id for h in hits] == [sid for sid, _ in ranked], (hits, ranked)
    assert np.allclose([h.distance for h in hits], [d for _, d in ranked], atol=1e-5)


def test_a_large_weight_moves_the_query_toward_the_text(client, chest):
    m, n = _text_vectors(client, PROMPT, compose.NEUTRAL_PROMPT)
    step = _unit(m) - _unit(n)

    def toward_text(hits) -> float:
        return float(np.mean([max(float(v @ step) for v in chest[h.study_id][0]) for h in hits]))

    plain = client.search(study_id=STUDY, k=10)
    moved = client.search(study_id=STUDY, k=10, modify=PROMPT, modify_weight=10)
    assert toward_text(moved) > toward_text(plain), (toward_text(moved), toward_text(plain))
    # At w = 10 the text step dominates: the hits are (mostly) the studies furthest along it.
    patient = chest[STUDY][1]
    along = sorted(
        (sid for sid, (_, p) in chest.items() if sid != STUDY and (p is None or p != patient)),
        key=lambda sid: -max(float(v @ step) for v in chest[sid][0]),
    )
    assert len({h.study_id for h in moved} & set(along[:10])) >= 8, (moved, along[:10])


# ---------------------------------------------------------------- SQL by study id


def test_stored_prompts_let_sql_run_the_study_form(client, url, use_db, capsys, chest):
    with connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute(f"SELECT * FROM casebase.similar_cases_modified('{STUDY}', '{PROMPT}')")
    message = info.value.diag.message_primary
    assert message == (
        f"prompt '{PROMPT}' has no vector in space tiny-random: casebase prompts add "
        f"--space tiny-random '{PROMPT}'"
    )
    code, out, err = _cli(["prompts", "add", PROMPT, "  cardiomegaly "], capsys)
    assert code == 0, err
    assert out.strip() == (
        "space tiny-random: 3 prompts stored: cardiomegaly, no finding, pleural effusion"
    )
    code, out, _ = _cli(["prompts", "list"], capsys)
    assert [line.split(None, 1) for line in out.splitlines()] == [
        ["tiny-random", p] for p in ("cardiomegaly", "no finding", "pleural effusion")
    ]
    with connect(url) as conn:
        sql = _sql(
            conn,
            "SELECT study_id, distance, route FROM casebase.similar_cases_modified("
            "%s, %s, modify_weight => 2, k => 10)",
            (STUDY, PROMPT),
        )
        stored = dict(_sql(conn, "SELECT prompt, vec FROM casebase.prompts"))
    hits = client.search(study_id=STUDY, k=10, modify=PROMPT, modify_weight=2)
    assert [(s, round(d, 6)) for s, d, _ in sql] == [
        (h.study_id, round(h.distance, 6)) for h in hits
    ]
    assert all(route.startswith("composed/") for *_, route in sql)
    patient = chest[STUDY][1]
    assert all(h.study_id != STUDY and chest[h.study_id][1] != patient for h in hits)
    m, n = _text_vectors(client, PROMPT, compose.NEUTRAL_PROMPT)
    assert np.array_equal(stored[PROMPT].to_numpy(), m)
    assert np.array_equal(stored["no finding"].to_numpy(), n)
    assert _cli_modified_ids("2", capsys) == [h.study_id for h in hits]


def test_the_neutral_prompt_is_one_rule(client):
    from casebase.train.data import NO_FINDING

    args = client.conn.execute(
        "SELECT pg_get_function_arguments('casebase.similar_cases_modified'::regproc)"
    ).fetchone()[0]
    client.conn.rollback()
    assert f"neutral text DEFAULT '{compose.NEUTRAL_PROMPT}'::text" in args, args
    assert compose.NEUTRAL_PROMPT == NO_FINDING


# ---------------------------------------------------------------- bad input


BAD = [
    ("", 1.0, "the modify text is empty"),
    ("   ", 1.0, "the modify text is empty"),
    ("x" * 10_000, 1.0, "the modify text has 10000 characters; at most 300"),
    (PROMPT, -0.5, "modify_weight must be between 0 and 10, got -0.5"),
    (PROMPT, 10.5, "modify_weight must be between 0 and 10, got 10.5"),
]


@pytest.mark.parametrize(("modify", "weight", "message"), BAD)
def test_bad_modify_input_is_one_line_everywhere(
    client, url, use_db, capsys, modify, weight, message
):
    msg = message
    with pytest.raises(QueryError) as python:
        client.search(study_id=STUDY, modify=modify, modify_weight=weight)
    assert str(python.value) == msg
    code, out, err = _cli(
        ["search", "--study", STUDY, "--modify", modify, "--modify-weight", str(weight)], capsys
    )
    assert (code, out, err) == (1, "", f"casebase: error: {msg}\n")
    with connect(url) as conn:
        if "text" in msg:  # the text itself is SQL's only in the study form
            client.embed_prompts([PROMPT])
            sql = "SELECT * FROM casebase.similar_cases_modified(%s, %s, modify_weight => %s)"
            params: tuple = (STUDY, modify, weight)
        else:
            m, n = _text_vectors(client, PROMPT, compose.NEUTRAL_PROMPT)
            sql = (
                "SELECT * FROM casebase.similar_composed((SELECT vec FROM "
                "casebase.query_image(%s)), %s, %s, %s, modality => 'CXR')"
            )
            params = (STUDY, _v(m), _v(n), weight)
        with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(sql, params)
    assert info.value.sqlstate == "22023" and info.value.diag.message_primary == msg


def test_other_bad_vectors_and_weights_are_one_line_sql_errors(client, url):
    m, n = _text_vectors(client, PROMPT, compose.NEUTRAL_PROMPT)
    head = "SELECT * FROM casebase.similar_composed((SELECT vec FROM casebase.query_image(%s)), "
    for args, params, message in [
        ("%s, %s, 'NaN', modality => 'CXR')", (_v(m), _v(n)), "got NaN"),
        ("%s, NULL, modality => 'CXR')", (_v(m),), "the neutral vector is NULL"),
        ("'[1,2,3]', %s, modality => 'CXR')", (_v(n),), "the modify vector has 3 dim"),
        ("%s, %s, 1, k => 0, modality => 'CXR')", (_v(m), _v(n)), "k must be between"),
    ]:
        with connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(head + args, (STUDY, *params))
        assert message in info.value.diag.message_primary, (args, info.value)
        assert "\n" not in info.value.diag.message_primary
    with pytest.raises(QueryError, match="between 0 and 10, got nan"):
        client.search(study_id=STUDY, modify=PROMPT, modify_weight=math.nan)


def test_a_text_longer_than_the_text_tower_reads_is_refused(client, use_db, capsys):
    long = "effusion " * 30  # 270 characters, more tokens than tiny-random's 32
    with pytest.raises(QueryError, match=r"the modify text is \d+ tokens; the text tower of"):
        client.search(study_id=STUDY, modify=long)
    code, _, err = _cli(["prompts", "add", long], capsys)
    assert code == 1 and err.count("\n") == 1 and "tokens" in err, err


def test_a_model_without_a_text_tower_is_a_one_line_error(client):
    """open_clip's models all have a text tower and checkpoints load strictly; an
    encoder whose model is only an image tower (a plug-in of another kind) is refused."""
    import torch

    from casebase.retrieval.encode import encoder_for_space

    encoder = encoder_for_space(client.space())
    compose.check_text_tower(encoder, "tiny-random")  # has one

    class ImageOnly(torch.nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

    class Plugin:
        model = ImageOnly(encoder.model.visual)

    with pytest.raises(ModelError) as info:
        compose.check_text_tower(Plugin(), "pixels")
    assert str(info.value) == (
        "the model of space 'pixels' has no text tower, so it cannot embed a modify text: "
        "use a space whose model has one (--space)"
    )


def test_modify_takes_an_image_study_or_vector_query_only(client, chest):
    with pytest.raises(QueryError, match="modify works with an image, study_id or vector"):
        client.search(text="effusion", modify=PROMPT, modality="CXR")
    with pytest.raises(QueryError, match="give modify or rerank_space, not both"):
        client.search(study_id=STUDY, modify=PROMPT, rerank_space="tiny-random")
    vector = chest[STUDY][0][0]
    hits = client.search(vector=vector, modify=PROMPT, modify_weight=1, k=5, modality="CXR")
    assert len(hits) == 5 and all(h.route.startswith("composed/") for h in hits)


def test_a_brief_of_a_composed_search_says_what_was_searched(client, use_db, capsys):
    hits = client.search(study_id=STUDY, k=10, modify=PROMPT, modify_weight=2)
    code, out, err = _cli(
        [
            "brief",
            "--study",
            STUDY,
            "-k",
            "10",
            "--json",
            "--modify",
            PROMPT,
            "--modify-weight",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    brief = json.loads(out)
    assert brief["query"] == f"study {STUDY} + '{PROMPT}' (modify weight 2)", brief["query"]
    assert sorted(brief["aggregate"]["study_ids"]) == sorted(h.study_id for h in hits)
