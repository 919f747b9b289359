"""Coding conventions: the cues read as a site's coders code (issue #13), chosen per
installation by ``casebase relabel --convention`` and followed by later batches."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from casebase.errors import ConfigError, InputError
from casebase.synthesis.cues import Convention, apply_convention, conventions, load_cues
from casebase.synthesis.extract import LABELLER_VERSION, extract_many, rollup

DIFFERENTIAL = "Left basilar opacity, atelectasis or scarring."
VERSUS = "Opacity at the right base, atelectasis versus pneumonia."
BORDERLINE = "Borderline cardiomegaly."
NEGATED = "No pneumothorax."


def _labels(texts: list[str], convention: str) -> list[dict[str, str]]:
    return [rollup(m) for m in extract_many(texts, convention=convention)]


def test_iu_coders_code_differentials_and_borderline_findings_present() -> None:
    """Strict: both findings of "A or B" / "A versus B" and a borderline one uncertain;
    iu-coders: present. Every other cue (negation here) is the packaged one."""
    texts = [DIFFERENTIAL, VERSUS, BORDERLINE, NEGATED]
    strict, coders = _labels(texts, "strict"), _labels(texts, "iu-coders")
    assert strict[0]["atelectasis"] == "uncertain" and coders[0]["atelectasis"] == "present"
    assert coders[0]["scarring_fibrosis"] == "present"
    assert strict[1]["atelectasis"] == "uncertain" and coders[1]["atelectasis"] == "present"
    assert strict[2]["cardiomegaly"] == "uncertain" and coders[2]["cardiomegaly"] == "present"
    assert strict[3]["pneumothorax"] == coders[3]["pneumothorax"] == "absent"
    assert conventions()[:2] == ["strict", "iu-coders"]


def test_a_convention_is_edits_to_the_cues_not_a_copy() -> None:
    """Dropped words leave the phrases that offer other choices; a required word with no
    choice left drops its phrase; an optional one just goes; kinds and "or" go whole."""
    data = {
        "cues": {
            "hedge": {
                "forward": ["equivocal|borderline", "[is|are] borderline", "[borderline] low"],
                "backward": ["borderline"],
            },
            "differential": {"forward": ["versus"]},
            "negation": {"forward": ["no"]},
        },
        "phrase_scope": ["change", "differential"],
        "alternatives": ["or"],
    }
    edits = Convention("t", "", frozenset({"differential"}), frozenset({"borderline"}), False)
    out = apply_convention(data, edits)
    assert out["cues"] == {
        "hedge": {"forward": ["equivocal", "low"]},
        "negation": {"forward": ["no"]},
    }
    assert out["phrase_scope"] == ["change"] and out["alternatives"] == []
    assert data["alternatives"] == ["or"]  # the cue file's data is left as it was


def test_an_unknown_convention_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown labelling convention 'nope' \(known: strict"):
        load_cues(convention="nope")


def _cli(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casebase.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": url},
        timeout=300,
    )


def _all_findings(url: str) -> list[tuple]:
    from casebase.db.connection import connect

    with connect(url) as conn:
        return conn.execute(
            "SELECT study_pk, finding, status, version, evidence FROM casebase.finding "
            "ORDER BY 1, 2"
        ).fetchall()


def _manifest(folder: Path, prefix: str, reports: list[str]) -> Path:
    """A generated cohort's manifest with its reports replaced by ``reports``."""
    from casebase.cohort import generate

    src = generate(folder, n_chest=len(reports), n_knee=0, seed=5)
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = folder / f"{prefix}.csv"
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row, report in zip(rows, reports, strict=True):
            row["study_id"] = f"{prefix}-{row['study_id']}"
            row["report"] = f"FINDINGS: {report}"
            row["image_path"] = str(folder / row["image_path"])
            writer.writerow(row)
    return out


def test_relabel_switches_the_convention_and_later_batches_follow_it(server_url, tmp_path):
    from casebase.db.connection import connect
    from casebase.ingest.pipeline import IngestOptions, ingest
    from casebase.synthesis.store import relabel, stored_convention
    from tests.conftest import drop_database, make_database

    url = make_database(server_url, "t_conventions")
    options = {"model": "tiny-random", "workers": 0, "progress": False}
    reports = [DIFFERENTIAL, NEGATED]
    query = (
        "SELECT s.batch, f.finding, f.status, f.version FROM casebase.finding f "
        "JOIN casebase.study s USING (study_pk) WHERE f.finding IN "
        "('atelectasis', 'pneumothorax') ORDER BY 1, 2"
    )
    coders = f"{LABELLER_VERSION}+iu-coders"
    try:
        ingest(_manifest(tmp_path, "a", reports), IngestOptions(batch="a", **options), url=url)
        with connect(url) as conn:
            assert stored_convention(conn) == "strict"
            assert conn.execute(query).fetchall() == [
                ("a", "atelectasis", "uncertain", LABELLER_VERSION),
                ("a", "pneumothorax", "absent", LABELLER_VERSION),
            ]
            assert relabel(conn, convention="iu-coders")[0] == 2
            assert stored_convention(conn) == "iu-coders"
            assert conn.execute(query).fetchall() == [
                ("a", "atelectasis", "present", coders),
                ("a", "pneumothorax", "absent", coders),
            ]
        # A later batch is labelled under the stored convention.
        ingest(_manifest(tmp_path, "b", reports), IngestOptions(batch="b", **options), url=url)
        with connect(url) as conn:
            assert conn.execute(query).fetchall()[2:] == [
                ("b", "atelectasis", "present", coders),
                ("b", "pneumothorax", "absent", coders),
            ]
            # A switch relabels every report: not one batch. Nothing changes.
            with pytest.raises(InputError, match="run it without --batch"):
                relabel(conn, batch="b", convention="strict")
            relabel(conn, batch="b")  # no switch: the stored convention
            assert stored_convention(conn) == "iu-coders"
            assert {r[3] for r in conn.execute(query).fetchall()} == {coders}
        # The command line: the same refusals in one line each, nothing changed by them,
        # then the switch back.
        before = _all_findings(url)
        refused = _cli("relabel", "--batch", "b", "--convention", "strict", url=url)
        assert refused.returncode == 1 and "run it without --batch" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        unknown = _cli("relabel", "--convention", "nope", url=url)
        assert unknown.returncode == 1, unknown.stderr
        assert "unknown labelling convention 'nope' (known: strict, iu-coders" in unknown.stderr
        assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
        assert _all_findings(url) == before
        with connect(url) as conn:
            assert stored_convention(conn) == "iu-coders"
        done = _cli("relabel", "--convention", "strict", url=url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("relabelled 4 reports: ")
        assert done.stdout.rstrip().endswith(f"findings ({LABELLER_VERSION})"), done.stdout
        with connect(url) as conn:
            assert stored_convention(conn) == "strict"
            assert [r[2:] for r in conn.execute(query).fetchall()] == [
                ("uncertain", LABELLER_VERSION),
                ("absent", LABELLER_VERSION),
            ] * 2
    finally:
        drop_database(server_url, "t_conventions")
