"""The client, brief, hybrid search, grid and eval on a small generated cohort with reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import casebase
from casebase.db.connection import connect
from casebase.synthesis.brief import Brief


@pytest.fixture()
def cohort(cohort_manifest) -> Path:
    return cohort_manifest


@pytest.fixture()
def db_url(cohort_url) -> str:
    return cohort_url


@pytest.fixture()
def use_db(cohort_url, monkeypatch) -> str:
    monkeypatch.setenv("DATABASE_URL", cohort_url)
    return cohort_url


@pytest.fixture()
def client(db_url, cohort):
    with casebase.connect(db_url) as c:
        yield c


def test_brief_counts_equal_a_group_by_over_similar_cases(client, db_url):
    hits = client.search(study_id="DEMO-C0001", k=30)
    assert len(hits) == 30 and all(h.modality == "CXR" for h in hits)
    brief = client.brief(hits, query="study DEMO-C0001")
    with connect(db_url) as conn:
        rows = conn.execute(
            """
            SELECT f.finding,
                   count(*) FILTER (WHERE f.status = 'present'),
                   count(*) FILTER (WHERE f.status = 'uncertain'),
                   count(*) FILTER (WHERE f.status = 'absent')
            FROM casebase.similar_cases('DEMO-C0001', k => 30) s
            JOIN casebase.findings f USING (study_id)
            WHERE f.backend = 'rules'
            GROUP BY f.finding
            """
        ).fetchall()
    sql = {r[0]: tuple(r[1:]) for r in rows}
    ours = {c.finding: (c.present, c.uncertain, c.absent) for c in brief.aggregate.counts}
    assert ours == sql
    assert Brief.from_json(brief.to_json()) == brief
    text = brief.render_text()
    assert "Of the 30 most similar cases" in text or "30" in text
    assert "not a diagnosis" in text.lower()


def test_every_count_traces_to_study_ids(client):
    hits = client.search(study_id="DEMO-C0002", k=20)
    brief = client.brief(hits)
    hit_ids = {h.study_id for h in hits}
    found = client.findings(sorted(hit_ids))
    for count in brief.aggregate.counts:
        assert len(count.present_ids) == count.present
        assert set(count.present_ids) <= hit_ids
        for sid in count.present_ids:
            assert found[sid][count.finding] == "present"


def test_cli_brief_json_round_trips(use_db, cohort):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "casebase.cli",
            "brief",
            "--study",
            "DEMO-C0003",
            "-k",
            "15",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    brief = Brief.from_json(out.stdout)
    assert brief.k == 15 and brief.aggregate.n_hits == 15
    assert json.loads(brief.to_json()) == json.loads(out.stdout)


def test_hybrid_text_query_says_where_hits_came_from(client):
    hits = client.search(text="pleural effusion", modality="CXR", k=10)
    assert hits and all(h.modality == "CXR" for h in hits)
    assert all(set(h.sources) <= {"image", "text"} and h.sources for h in hits)
    assert any("text" in h.sources for h in hits)
    texts = client.conn.execute(
        "SELECT study_id, findings || ' ' || impression FROM casebase.studies "
        "WHERE study_id = ANY(%s)",
        ([h.study_id for h in hits if "text" in h.sources],),
    ).fetchall()
    assert all("effusion" in t.lower() for _, t in texts)


def test_image_query_and_contact_sheet(client, cohort, use_db, tmp_path):
    image = cohort.parent / "images" / "cxr_0005.png"
    hits = client.search(image=image, modality="CXR", k=5)
    assert hits[0].study_id == "DEMO-C0005" and hits[0].distance < 1e-4
    grid = tmp_path / "grid.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "casebase.cli",
            "search",
            "--study",
            "DEMO-C0005",
            "-k",
            "9",
            "--grid",
            str(grid),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    from PIL import Image

    with Image.open(grid) as img:
        assert img.size == (5 * 224, 2 * (224 + 58))


def test_diverse_drops_near_duplicates(client):
    plain = client.search(study_id="DEMO-C0007", k=10, exact=True)
    diverse = client.search(study_id="DEMO-C0007", k=10, exact=True, diverse=0.05)
    assert [h.rank for h in diverse] == list(range(1, len(diverse) + 1))
    patients = client._patient_keys([h.study_id for h in diverse])
    keys = [patients[h.study_id] for h in diverse]
    assert len(keys) == len(set(keys))
    assert diverse[0].study_id == plain[0].study_id


def test_analyst_login_can_search_and_brief_but_not_read_raw(db_url, cohort):
    with connect(db_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS t_alice")
        admin.execute("CREATE ROLE t_alice LOGIN IN ROLE casebase_analyst")
    alice = db_url.replace("postgres@", "t_alice@")
    try:
        with casebase.connect(alice) as c:
            hits = c.search(study_id="DEMO-K0061", k=5, sex="F")
            assert all(h.modality == "KXR" and h.sex == "F" for h in hits)
            assert c.brief(hits).aggregate.n_hits == len(hits)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.conn.execute("SELECT raw_text FROM casebase.report_raw")
    finally:
        with connect(db_url, autocommit=True) as admin:
            admin.execute("DROP OWNED BY t_alice")
            admin.execute("DROP ROLE t_alice")


def test_relabel_reproduces_the_findings(client, db_url):
    from casebase.synthesis.store import relabel

    before = client.conn.execute(
        "SELECT study_id, finding, status FROM casebase.findings ORDER BY 1, 2"
    ).fetchall()
    with connect(db_url) as conn:
        n_reports, n_findings = relabel(conn)
    after = client.conn.execute(
        "SELECT study_id, finding, status FROM casebase.findings ORDER BY 1, 2"
    ).fetchall()
    assert n_reports == 80 and n_findings == len(before)
    assert after == before


def test_eval_by_label_and_by_findings(client):
    report = client.evaluate(label="label", ks=(5, 10), queries=20, modality="CXR")
    assert report.n_queries == 20 and report.roundtrip_rate == 1.0
    for k in (5, 10):
        assert 0.0 <= report.precision_at_k[k] <= 1.0
        assert 0.0 <= report.map_at_k[k] <= 1.0
        assert report.recall_vs_exact_at_k[k] >= 0.95
    by_findings = client.evaluate(findings=True, ks=(5,), queries=10, modality="CXR")
    assert by_findings.relevance == "shared finding"
    from casebase.errors import QueryError

    with pytest.raises(QueryError, match="no CXR study in space tiny-random has a 'nope'"):
        client.evaluate(label="nope", ks=(5,), queries=5, modality="CXR")
    with pytest.raises(QueryError, match="needs more than that"):
        client.evaluate(ks=(500,), queries=5, modality="KXR")


def test_attribute_filter(client):
    from casebase.retrieval.filters import Filters

    hits = client.search(
        study_id="DEMO-C0001", k=5, filters=Filters(attributes={"label": "normal"})
    )
    labels = client.conn.execute(
        "SELECT attributes ->> 'label' FROM casebase.studies WHERE study_id = ANY(%s)",
        ([h.study_id for h in hits],),
    ).fetchall()
    assert hits and {r[0] for r in labels} == {"normal"}
    assert {h.route for h in hits} == {"exact-filtered"}


def test_unreadable_query_image_is_a_one_line_error(client, use_db, tmp_path):
    from casebase.errors import InputError

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="zero-byte file"):
        client.search(image=empty, modality="CXR", k=5)
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(InputError, match="not an image"):
        client.search(image=text, modality="CXR", k=5)
    with pytest.raises(InputError, match="not a readable image"):
        client.search(image=b"\x00\x01garbage", modality="CXR", k=5)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "casebase.cli",
            "search",
            "--image",
            str(empty),
            "--modality",
            "CXR",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("casebase: error: zero-byte file")
