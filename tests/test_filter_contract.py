"""One filter contract (issue #12): every query kind (image, text, study id, vector, study +
text), through SQL, Python and the CLI, returns only studies that satisfy every filter,
checked against the stored metadata; a study query excludes the study and its patient;
one query-image rule; the same guardrails on every search function.

The database: a generated cohort plus studies with varied views, flags, dates, batches,
attributes and patients (tests/filter_cases.py), searched with a low exact_threshold so
that both routes of similar_to_vector (exact and HNSW) run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from dataclasses import fields

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

import casebase
from casebase.db.connection import connect
from casebase.errors import QueryError
from casebase.retrieval.filters import Filters
from tests.conftest import REPO
from tests.filter_cases import (
    FILTERS,
    KINDS,
    TEXTS,
    Case,
    Meta,
    add_varied_studies,
    check,
    make_case,
    n_matching,
)
from tests.second_space import add_second_space

SEED = 12
COMBINATIONS = 24  # random filter combinations per query kind, besides each filter alone


@pytest.fixture(scope="module")
def url(db_url, tmp_path_factory) -> str:
    from casebase.cohort import generate
    from casebase.ingest.pipeline import IngestOptions, ingest

    manifest = generate(tmp_path_factory.mktemp("cohort12"), n_chest=40, n_knee=16, seed=SEED)
    options = IngestOptions(batch="cohort", model="tiny-random", workers=0, progress=False)
    assert ingest(manifest, options, url=db_url).loaded == 56
    with connect(db_url) as conn:
        add_varied_studies(conn, 30, seed=SEED)
        conn.execute("UPDATE casebase.setting SET value = '25' WHERE key = 'exact_threshold'")
        conn.execute("ANALYZE casebase.embedding")
        conn.commit()
    # Two-stage searches re-rank in a second space, back-filled from the cohort's files
    # (the varied studies' images are not files: they stay out of it); composed searches
    # by study id in SQL read stored prompts.
    assert add_second_space(db_url, tmp_path_factory.mktemp("second")) > 0
    with casebase.connect(db_url) as client:
        client.embed_prompts(TEXTS)
    return db_url


@pytest.fixture(scope="module")
def meta(url) -> Meta:
    with connect(url) as conn:
        return Meta.read(conn)


@pytest.fixture(scope="module")
def vectors(url) -> dict[int, np.ndarray]:
    from casebase.retrieval.search import as_array

    with connect(url) as conn:
        rows = conn.execute(
            "SELECT image_id, vec FROM casebase.embeddings WHERE space = 'tiny-random'"
        ).fetchall()
    return {image_id: as_array(vec) for image_id, vec in rows}


@pytest.fixture(scope="module")
def client(url):
    with casebase.connect(url) as c:
        yield c


def _cases(meta: Meta, vectors, kind: str) -> list[Case]:
    rng = np.random.default_rng([SEED, KINDS.index(kind)])
    alone = [make_case(meta, vectors, rng, kind, {name}) for name in FILTERS]
    mixed = [
        make_case(meta, vectors, rng, kind, set(rng.choice(FILTERS, size=n, replace=False)))
        for n in rng.integers(2, len(FILTERS) + 1, size=COMBINATIONS)
    ]
    return alone + mixed


# ---------------------------------------------------------------- the three paths

_CASTS = {
    "q": "vector",
    "k": "integer",
    "exact": "boolean",
    "exclude_same_patient": "boolean",
    "age_min": "double precision",
    "age_max": "double precision",
    "views": "text[]",
    "exclude_flags": "text[]",
    "require_flags": "text[]",
    "date_from": "date",
    "date_to": "date",
    "batches": "text[]",
    "attributes": "jsonb",
}
_HIT = "h.study_id, h.image_id, h.view, h.flags, h.sex, h.modality, h.distance"


def _sql_filters(f: Filters) -> dict:
    low, high = f.age or (None, None)
    return {
        "modality": f.modality,
        "sex": f.sex,
        "age_min": low,
        "age_max": high,
        "views": list(f.views) if f.views else None,
        "exclude_flags": list(f.exclude_flags) or None,
        "require_flags": list(f.require_flags) or None,
        "date_from": f.date_from,
        "date_to": f.date_to,
        "batches": list(f.batches) if f.batches else None,
        "attributes": Jsonb(f.attributes) if f.attributes else None,
    }


def _bind(args: dict) -> str:
    return ", ".join(f"{n} => %({n})s::{_CASTS.get(n, 'text')}" for n in args)


def run_sql(conn, client, case: Case) -> list[dict]:
    """The SQL functions called directly, as an analyst would."""
    from casebase.retrieval.encode import image_vector

    common = {"k": case.k, **_sql_filters(case.filters), "exact": case.exact}
    esp = case.filters.exclude_same_patient
    if case.kind == "study":
        args = {"study_id": case.study_id, **common, "exclude_same_patient": esp}
        sql = f"SELECT {_HIT} FROM casebase.similar_cases({_bind(args)}) h"
    elif case.kind == "study+text":
        # The study's query image, modality and patient from query_image, as
        # similar_cases takes them.
        args = {"query": case.text, **common}
        modality = args.pop("modality")
        sql = (
            f"SELECT {_HIT} FROM casebase.query_image(%(study)s) qi, "
            f"LATERAL casebase.hybrid_search(q => qi.vec, {_bind(args)}, "
            "modality => coalesce(%(modality)s::text, qi.modality), "
            "exclude_study => %(study)s::text, "
            "exclude_patient => CASE WHEN %(esp)s::boolean THEN qi.patient_key END) h"
        )
        args |= {"modality": modality, "study": case.study_id, "esp": esp}
    elif case.kind == "text":
        args = {"q": None, "query": case.text, **common}
        sql = f"SELECT {_HIT} FROM casebase.hybrid_search({_bind(args)}) h"
    else:
        vec = case.vector if case.kind == "vector" else image_vector(client.space(), case.image)
        args = {"q": np.asarray(vec, dtype=np.float32).tolist(), **common}
        sql = f"SELECT {_HIT} FROM casebase.similar_to_vector({_bind(args)}) h"
    cur = conn.execute(sql, args)
    names = [c.name for c in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    return rows


def run_python(client, case: Case) -> list[dict]:
    query = {
        "image": {"image": case.image},
        "text": {"text": case.text},
        "study": {"study_id": case.study_id},
        "vector": {"vector": case.vector},
        "study+text": {"study_id": case.study_id, "text": case.text},
    }[case.kind]
    hits = client.search(**query, k=case.k, filters=case.filters, exact=case.exact)
    return [h.__dict__ | {"flags": list(h.flags)} for h in hits]


def cli_argv(case: Case) -> list[str]:
    f = case.filters
    argv = ["search", "-k", str(case.k), "--json"]
    argv += {
        "image": ["--image", str(case.image)],
        "text": ["--text", str(case.text)],
        "study": ["--study", str(case.study_id)],
        "study+text": ["--study", str(case.study_id), "--with-text", str(case.text)],
    }[case.kind]
    if f.modality:
        argv += ["--modality", f.modality]
    if f.sex:
        argv += ["--sex", f.sex]
    if f.age:
        argv += ["--age", "-".join("" if a is None else f"{a:g}" for a in f.age)]
    for name, flag in (("views", "--view"), ("batches", "--batch")):
        for value in getattr(f, name) or ():
            argv += [flag, value]
    for value in f.exclude_flags:
        argv += ["--exclude-flag", value]
    for value in f.require_flags:
        argv += ["--require-flag", value]
    if f.date_from:
        argv += ["--from", f.date_from.isoformat()]
    if f.date_to:
        argv += ["--to", f.date_to.isoformat()]
    for key, value in (f.attributes or {}).items():
        argv += ["--attr", f"{key}={value}"]
    if not f.exclude_same_patient:
        argv.append("--include-same-patient")
    if case.exact:
        argv.append("--exact")
    return argv


def run_cli(case: Case, capsys) -> list[dict]:
    from casebase.cli import main

    capsys.readouterr()
    code = main(cli_argv(case))
    out = capsys.readouterr()
    assert code == 0, (cli_argv(case), out.err)
    return [h | {"image_id": h["extra"]["image_id"]} for h in json.loads(out.out)]


# ---------------------------------------------------------------- every filter, every path


@pytest.mark.parametrize("kind", KINDS)
def test_every_hit_satisfies_every_filter_in_sql_and_python(url, meta, vectors, client, kind):
    cases = _cases(meta, vectors, kind)
    with_hits = checked = 0
    with connect(url) as conn:
        for case in cases:
            sql = run_sql(conn, client, case)
            # Without a vector (text alone in SQL) the text list decides how many match.
            check(meta, case, sql, "SQL", counted=kind != "text")
            python = run_python(client, case)
            check(meta, case, python, "Python", counted=True)
            if kind != "text":  # the same statement: the same studies, in the same order
                assert [h["study_id"] for h in python] == [h["study_id"] for h in sql], case
            with_hits += bool(python)
            checked += len(sql) + len(python)
    # The test proves something only if most cases find studies to check.
    assert with_hits >= len(cases) * 0.6 and checked >= 150, (kind, with_hits, checked)


def test_every_hit_satisfies_every_filter_from_the_cli(use_db, url, meta, vectors, capsys):
    cases = [c for kind in KINDS if kind != "vector" for c in _cases(meta, vectors, kind)[::5]]
    for case in cases:
        check(meta, case, run_cli(case, capsys), "CLI", counted=True)


# ---------------------------------------------------------------- composed and re-ranked

#: The searches of issue #18, each on a query kind above: a composed query ("like this,
#: but with X": similar_composed, similar_cases_modified) and a two-stage one (candidates
#: in tiny-random, re-scored in space "second": similar_reranked, similar_cases_reranked).
TWO_STEP = ("study+modify", "vector+modify", "study+rerank", "image+rerank")
_TWO_STEP_CASTS = {"modify_weight": "double precision", "rerank_candidates": "integer"}


def _two_step_cases(meta: Meta, vectors, kind: str) -> list[tuple[Case, dict]]:
    """The query kind's random cases, each with its modify text and weight or its
    candidate count; a re-ranked study query is a study the second space holds."""
    base = kind.split("+")[0]
    out = []
    for i, case in enumerate(_cases(meta, vectors, base)):
        if kind.endswith("modify"):
            extra = {"modify": TEXTS[i % len(TEXTS)], "modify_weight": (0.5, 2.0, 8.0)[i % 3]}
        else:
            extra = {"rerank_candidates": case.k * (1, 2, 4)[i % 3]}
            if base == "study" and case.study_id.startswith("EXTRA"):
                case = dataclasses.replace(case, study_id=f"DEMO-C{i % 40:04d}")
        out.append((case, extra))
    return out


def run_two_step_sql(conn, client, case: Case, kind: str, extra: dict) -> list[dict]:
    from pgvector import Vector

    from casebase.retrieval import compose
    from casebase.retrieval.encode import image_vector

    common = {"k": case.k, **_sql_filters(case.filters), "exact": case.exact}
    if case.study_id is not None:
        common["exclude_same_patient"] = case.filters.exclude_same_patient
    casts = dict(_TWO_STEP_CASTS)
    if kind == "study+modify":
        function = "similar_cases_modified"
        args = {"study_id": case.study_id, "modify": extra["modify"], **common}
    elif kind == "vector+modify":
        function = "similar_composed"
        m, n = compose.prompt_vectors(client.space(), [extra["modify"], compose.NEUTRAL_PROMPT])
        args = {"q": np.asarray(case.vector, np.float32).tolist(), "modify": Vector(m)}
        args |= {"neutral": Vector(n), **common}
        casts |= {"modify": "vector", "neutral": "vector"}
    elif kind == "study+rerank":
        function = "similar_cases_reranked"
        args = {"study_id": case.study_id, "rerank_space": "second", **common}
    else:
        function = "similar_reranked"
        q1 = image_vector(client.space("tiny-random"), case.image)
        q2 = image_vector(client.space("second"), case.image)
        args = {"q": q1.tolist(), "q_rerank": Vector(q2), "rerank_space": "second", **common}
        casts |= {"q_rerank": "vector"}
    for key in ("modify_weight", "rerank_candidates"):
        if key in extra:
            args[key] = extra[key]
    bound = ", ".join(f"{n} => %({n})s::{casts.get(n) or _CASTS.get(n, 'text')}" for n in args)
    cur = conn.execute(f"SELECT {_HIT}, h.route FROM casebase.{function}({bound}) h", args)
    names = [c.name for c in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    return rows


def run_two_step_python(client, case: Case, kind: str, extra: dict) -> list[dict]:
    query = {
        "study": {"study_id": case.study_id},
        "vector": {"vector": case.vector},
        "image": {"image": case.image},
    }[kind.split("+")[0]]
    if kind.endswith("rerank"):
        extra = {"rerank_space": "second", **extra}
    hits = client.search(**query, **extra, k=case.k, filters=case.filters, exact=case.exact)
    return [h.__dict__ | {"flags": list(h.flags)} for h in hits]


@pytest.mark.parametrize("kind", TWO_STEP)
def test_composed_and_reranked_hits_satisfy_every_filter(url, meta, vectors, client, kind):
    cases = _two_step_cases(meta, vectors, kind)
    with_hits = checked = reranked = 0
    with connect(url) as conn:
        for case, extra in cases:
            sql = run_two_step_sql(conn, client, case, kind, extra)
            check(meta, case, sql, "SQL", counted=True)
            python = run_two_step_python(client, case, kind, extra)
            check(meta, case, python, "Python", counted=True)
            assert [h["study_id"] for h in python] == [h["study_id"] for h in sql], case
            want = "composed/" if kind.endswith("modify") else ("reranked/", "first-stage/")
            assert all(h["route"].startswith(want) for h in python), (case, python)
            with_hits += bool(python)
            checked += len(sql) + len(python)
            reranked += sum(h["route"].startswith("reranked/") for h in python)
    assert with_hits >= len(cases) * 0.6 and checked >= 150, (kind, with_hits, checked)
    if kind.endswith("rerank"):  # the second space scored most hits (it lacks a few)
        assert reranked >= checked / 2 * 0.6, (reranked, checked)


def test_composed_and_reranked_hits_satisfy_every_filter_from_the_cli(
    use_db, url, meta, vectors, capsys
):
    for kind in ("study+modify", "study+rerank", "image+rerank"):
        for case, extra in _two_step_cases(meta, vectors, kind)[::7]:
            argv = cli_argv(case)
            if "modify" in extra:
                argv += [
                    "--modify",
                    extra["modify"],
                    "--modify-weight",
                    str(extra["modify_weight"]),
                ]
            else:
                argv += ["--rerank-space", "second"]
                argv += ["--rerank-candidates", str(extra["rerank_candidates"])]
            capsys.readouterr()
            from casebase.cli import main

            assert main(argv) == 0, (argv, capsys.readouterr().err)
            hits = json.loads(capsys.readouterr().out)
            check(meta, case, [h | {"image_id": h["extra"]["image_id"]} for h in hits], "CLI",
                  counted=True)  # fmt: skip


def test_the_issue_search_returns_only_lateral_portable_studies(use_db, url, meta, capsys):
    """`casebase search --text "pneumonia consolidation" --modality CXR --view LATERAL
    --require-flag portable` returned 20 hits that broke the view, flag, date, batch and
    attribute filters. Run in a subprocess, as a user runs it; then with --batch cohort,
    whose studies have no lateral film, in process: no hit at all."""
    text = "pneumonia consolidation"
    argv = ["search", "--text", text, "--modality", "CXR", "--view", "LATERAL"]
    argv += ["--require-flag", "portable", "--json"]
    out = subprocess.run(
        [sys.executable, "-m", "casebase.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    hits = [h | {"image_id": h["extra"]["image_id"]} for h in json.loads(out.stdout)]
    f = Filters(modality="CXR", views=("LATERAL",), require_flags=("portable",))
    check(meta, Case("text", 20, f, False, text=text), hits, "CLI", counted=True)
    assert hits, "the varied studies hold lateral portable chest films"
    f = dataclasses.replace(f, batches=("cohort",))
    case = Case("text", 20, f, False, text=text)
    assert run_cli(case, capsys) == []
    assert n_matching(meta, case) == 0


# ---------------------------------------------------------------- study queries


def _patient_with_other_studies(meta: Meta) -> tuple[str, set[str]]:
    by_patient: dict[str, list[str]] = {}
    for sid, study in sorted(meta.studies.items()):
        if study["patient_key"] and study["modality"] == "CXR":
            by_patient.setdefault(study["patient_key"], []).append(sid)
    studies = max(by_patient.values(), key=len)
    assert len(studies) >= 2, by_patient
    return studies[0], set(studies[1:])


def test_study_with_text_excludes_the_study_and_its_patient(url, meta, client, use_db, capsys):
    study, siblings = _patient_with_other_studies(meta)
    every = client.search(study_id=study, text="pleural effusion", k=200)
    ids = {h.study_id for h in every}
    assert study not in ids and not ids & siblings, (study, siblings, sorted(ids))
    assert len(every) == sum(s["modality"] == "CXR" for s in meta.studies.values()) - 1 - len(
        siblings
    ), sorted(ids)
    kept = client.search(study_id=study, text="pleural effusion", k=200, exclude_same_patient=False)
    assert siblings <= {h.study_id for h in kept} and study not in {h.study_id for h in kept}
    case = Case("study+text", 200, Filters(), False, study_id=study, text="pleural effusion")
    with connect(url) as conn:
        assert [h["study_id"] for h in run_sql(conn, client, case)] == [h.study_id for h in every]
    assert [h["study_id"] for h in run_cli(case, capsys)] == [h.study_id for h in every]


def test_one_query_image_rule(url, meta, vectors, client, tmp_path, monkeypatch):
    """EXTRA-003's images are a lateral, a PA and an AP, in id order: the PA stands for it
    in SQL (query_image, similar_cases), in the client and on the contact sheet."""
    from casebase.retrieval.lookup import query_image, query_image_uri

    lateral, pa, ap = meta.images_of["EXTRA-003"]
    assert (meta.view(lateral), meta.view(pa), meta.view(ap)) == ("LATERAL", "PA", "AP")
    with connect(url) as conn:
        sql = "SELECT image_id FROM casebase.query_image('EXTRA-003')"
        (image_id,) = conn.execute(sql).fetchone()
        assert image_id == pa
        assert query_image(conn, "EXTRA-003").image_id == pa
        assert query_image_uri(conn, "EXTRA-003") == meta.images[pa]["uri"]
        by_study = conn.execute(
            "SELECT study_id, distance FROM casebase.similar_cases('EXTRA-003', k => 5, "
            "exclude_same_patient => false, exact => true)"
        ).fetchall()
        by_vector = conn.execute(
            "SELECT study_id, distance FROM casebase.similar_to_vector("
            "(SELECT vec FROM casebase.embeddings WHERE image_id = %s AND space = 'tiny-random'), "
            "k => 5, "
            "modality => %s, exclude_study => 'EXTRA-003', exact => true)",
            (pa, meta.studies["EXTRA-003"]["modality"]),
        ).fetchall()
    assert by_study == by_vector
    # Study + text in the client: every distance is to the PA (not to the first image).
    hits = client.search(study_id="EXTRA-003", text="effusion", k=10)
    got = [round(h.distance, 5) for h in hits]
    assert got == [round(1 - float(vectors[h.image_id] @ vectors[pa]), 5) for h in hits], got
    assert got != [round(1 - float(vectors[h.image_id] @ vectors[lateral]), 5) for h in hits]
    # The contact sheet's query tile (the first file it opens) is the PA too.
    from casebase.retrieval import grid

    opened: list[str | None] = []
    monkeypatch.setattr(grid, "_open", lambda path: opened.append(path))
    client.contact_sheet(tmp_path / "sheet.png", hits[:2], study_id="EXTRA-003")
    assert opened[:1] == [meta.images[pa]["uri"]], opened


def test_no_caller_picks_a_query_image_of_its_own():
    pattern = re.compile(r"ORDER BY\s+(\w+\.)?image_(id|pk)\s+LIMIT 1", re.I)
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "casebase").rglob("*.py"))
        if pattern.search(path.read_text())
    ]
    assert offenders == [], offenders


# ---------------------------------------------------------------- guardrails


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("k => 100000000", "k must be between 1 and 1000, got 100000000"),
        ("sex => 'bogus'", "sex must be F, M or O, got 'bogus'"),
        ("rrf_k => -1", "rrf_k must be between 1 and 1000, got -1"),
        ("rrf_k => 0", "rrf_k must be between 1 and 1000, got 0"),
        ("candidates => 5000", "candidates must be between 1 and 1000, got 5000"),
        ("age_min => 60, age_max => 20", "impossible age range: 60 to 20"),
        ("views => '{}'", "views is an empty list"),
        ("attributes => '[1]'", "attributes must be a JSON object"),
    ],
)
def test_hybrid_search_guardrails_are_one_line_errors(url, args, message):
    with connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute(
            f"SELECT * FROM casebase.hybrid_search(NULL, 'effusion', modality => 'CXR', {args})"
        )
    assert info.value.sqlstate == "22023"
    assert (
        message in info.value.diag.message_primary and "\n" not in info.value.diag.message_primary
    )


def test_a_100_kb_text_is_refused_in_sql_and_python(url, client):
    text = "effusion " * 11_400
    with connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute("SELECT * FROM casebase.hybrid_search(NULL, %s, modality => 'CXR')", (text,))
    assert info.value.diag.message_primary == "the query text has 102600 characters; at most 1000"
    with pytest.raises(QueryError) as python:
        client.search(text=text, modality="CXR")
    assert str(python.value) == info.value.diag.message_primary


@pytest.mark.parametrize(
    "function",
    [
        "similar_to_vector",
        "similar_cases",
        "hybrid_search",
        "similar_composed",
        "similar_cases_modified",
        "similar_reranked",
        "similar_cases_reranked",
    ],
)
def test_the_same_guardrails_on_every_search_function(url, meta, function):
    from casebase.retrieval import search

    head = {
        "similar_to_vector": "(SELECT vec FROM casebase.embeddings LIMIT 1), ",
        "similar_composed": "(SELECT vec FROM casebase.embeddings LIMIT 1), "
        "(SELECT vec FROM casebase.prompts LIMIT 1), (SELECT vec FROM casebase.prompts LIMIT 1), ",
        "similar_cases_modified": "'DEMO-C0001', 'pleural effusion', ",
        "similar_reranked": "(SELECT vec FROM casebase.embeddings LIMIT 1), "
        "(SELECT vec FROM casebase.embeddings LIMIT 1), 'second', ",
        "similar_cases_reranked": "'DEMO-C0001', 'second', ",
        "similar_cases": "'DEMO-C0001', ",
        "hybrid_search": "NULL, 'effusion', ",
    }[function]
    for args, message in (
        ("k => 100000000", "k must be between 1 and 1000"),
        ("sex => 'bogus'", "sex must be F, M or O"),
        ("date_from => '2025-01-02', date_to => '2025-01-01'", "impossible date range"),
        ("age_max => 200", "age 200 is outside 0-130"),
        ("batches => '{}'", "batches is an empty list"),
        ("require_flags => '{portable,NULL}'", "cannot hold NULL"),
    ):
        with connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(f"SELECT * FROM casebase.{function}({head}modality => 'CXR', {args})")
        assert message in info.value.diag.message_primary, (function, args)
    # Python reaches the same check, and says it in the same words.
    with connect(url) as conn, pytest.raises(QueryError, match="k must be between 1 and 1000"):
        search.search_hybrid(conn, None, "effusion", k=10**8, filters=Filters(), space=None)


def test_filters_reach_sql_whole_or_not_at_all(client):
    """Every field of Filters is a named argument of the three functions (or, for
    exclude_same_patient, of the study query), and conflicting inputs are errors."""
    from casebase.retrieval.search import filter_arguments

    names = {n for n, _ in filter_arguments(Filters())}
    want = {f.name for f in fields(Filters)} - {"age", "exclude_same_patient"}
    assert names == want | {"age_min", "age_max"}, names
    signatures = dict(
        client.conn.execute(
            "SELECT proname, pg_get_function_arguments(oid) FROM pg_proc "
            "WHERE pronamespace = 'casebase'::regnamespace AND proname = ANY (%s)",
            (
                [
                    "similar_to_vector",
                    "similar_cases",
                    "hybrid_search",
                    "similar_composed",
                    "similar_cases_modified",
                    "similar_reranked",
                    "similar_cases_reranked",
                ],
            ),
        ).fetchall()
    )
    client.conn.rollback()

    def filter_args(name: str) -> list[str]:
        args = [a.strip() for a in signatures[name].split(",")]
        return [a for a in args if a.split()[0] in names | {"exclude_patient", "exclude_study"}]

    for by_vector in ("hybrid_search", "similar_composed", "similar_reranked"):
        assert filter_args(by_vector) == filter_args("similar_to_vector"), signatures
    for by_study in ("similar_cases", "similar_cases_modified", "similar_cases_reranked"):
        assert filter_args(by_study) == [
            a
            for a in filter_args("similar_to_vector")
            if not a.startswith("exclude_") or a.startswith("exclude_flags")
        ], signatures
    with pytest.raises(QueryError, match="not both"):
        client.search(study_id="DEMO-C0001", sex="F", filters=Filters(sex="M"))
    with pytest.raises(QueryError, match="hybrid=False would ignore the text"):
        client.search(study_id="DEMO-C0001", text="effusion", hybrid=False)
