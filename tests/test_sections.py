"""One section finder for the sanitiser and the labeller (casebase.synthesis.sections)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from casebase.ingest import sanitize
from casebase.synthesis import sections
from casebase.synthesis.sentences import get_nlp

REPO = Path(__file__).resolve().parents[1]

REPORT = (
    "EXAM: Chest, two views.\n"
    "INDICATION: Rule out pneumonia.\n"
    "FINDINGS: Small left effusion.\n"
    "IMPRESSION: Effusion. Comparison: prior film."
)


def test_the_sanitiser_uses_the_shared_finder() -> None:
    assert sanitize.split_sections is sections.split_sections


def test_find_sections_kinds_and_bodies() -> None:
    found = sections.find_sections(REPORT)
    assert found is not None
    assert [(s.name, s.kind) for s in found] == [
        ("EXAM", "drop"),
        ("INDICATION", "drop"),
        ("FINDINGS", "findings"),
        ("IMPRESSION", "impression"),
        ("Comparison", "drop"),
    ]
    bodies = [REPORT[s.body_start : s.end].strip() for s in found]
    assert bodies == [
        "Chest, two views.",
        "Rule out pneumonia.",
        "Small left effusion.",
        "Effusion.",
        "prior film.",
    ]


def test_reporting_spans() -> None:
    spans = sections.reporting_spans(REPORT)
    assert [REPORT[s:e].strip() for s, e in spans] == ["Small left effusion.", "Effusion."]
    free = "Small left effusion. Accession: 12345."
    assert sections.reporting_spans(free) == [(0, len(free))]
    assert sections.find_sections(free) is None


def test_split_sections_as_the_sanitiser_had_it() -> None:
    assert sections.split_sections(REPORT) == ("Small left effusion.", "Effusion.", True, True)
    assert sections.split_sections("No headers at all.") == (
        "No headers at all.",
        None,
        False,
        False,
    )


def test_importing_the_sanitiser_does_not_import_spacy() -> None:
    code = "import sys, casebase.ingest.sanitize; sys.exit('spacy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()


def test_report_sentence_rules() -> None:
    nlp = get_nlp()
    sents = [s.text for s in nlp("Not assessed given hepatitis-C. The spleen is normal.").sents]
    assert sents == ["Not assessed given hepatitis-C.", "The spleen is normal."]
    sents = [s.text.strip() for s in nlp("Cough and fever. ? PE. ?pneumonia").sents]
    assert sents == ["Cough and fever.", "? PE.", "?pneumonia"]
    sents = [s.text.strip() for s in nlp("Seen by Dr. J. Smith today.").sents]
    assert sents == ["Seen by Dr. J. Smith today."]
