"""The eight failure kinds of issue #13, each with sentences written for this test.

None of these sentences comes from the NegEx test set or the IU reports. Whole-report
cases check ``label_report`` (exact dicts: nothing invented); span cases ask
``assert_span`` about a condition the lexicon does not know, the way the NegEx benchmark
does.
"""

from __future__ import annotations

import pytest

from casebase.synthesis import extract, label_report
from casebase.synthesis.assertion import ABSENT, HYPOTHETICAL, PRESENT, UNCERTAIN, assert_span

A, U, P = "absent", "uncertain", "present"


def span_status(text: str, target: str) -> str:
    start = text.index(target)
    return assert_span(text, start, start + len(target)).status


# (kind, text, expected labels)
REPORTS: list[tuple[str, str, dict[str, str]]] = [
    # 1. a long cue must not swallow the finding's first word
    (
        "1 long cue",
        "There is no significant heart enlargement.",
        {"cardiomegaly": A, "no_finding": P},
    ),
    (
        "1 long cue",
        "No new cardiac enlargement since the last film.",
        {"cardiomegaly": A, "no_finding": P},
    ),
    # 2. runs of spaces (dictation) do not break a cue
    ("2 spaces", "The pneumothorax is   not  seen.", {"pneumothorax": A, "no_finding": P}),
    ("2 spaces", "Negative    for pleural effusion.", {"pleural_effusion": A, "no_finding": P}),
    (
        "2 spaces",
        "There   are    no   pleural effusions.",
        {"pleural_effusion": A, "no_finding": P},
    ),
    # 3. negation after the finding
    ("3 post", "Pleural effusion: none.", {"pleural_effusion": A, "no_finding": P}),
    ("3 post", "Small apical pneumothorax, resolved.", {"pneumothorax": A, "no_finding": P}),
    ("3 post", "The heart is no longer enlarged.", {"cardiomegaly": A, "no_finding": P}),
    ("3 post", "Right pneumothorax - none today.", {"pneumothorax": A, "no_finding": P}),
    # ... and a label's value does not take the cue of the next phrase
    ("3 post", "IMPRESSION: Negative for pneumothorax.", {"pneumothorax": A, "no_finding": P}),
    # 4. scopes end at terminations, other clauses and sentence ends
    (
        "4 scope",
        "No pleural effusion and positive for a small pneumothorax.",
        {"pleural_effusion": A, "pneumothorax": P, "no_finding": A},
    ),
    (
        "4 scope",
        "No consolidation; however, a small left effusion.",
        {"consolidation_pneumonia": A, "pleural_effusion": P, "no_finding": A},
    ),
    (
        "4 scope",
        "The liver is not assessed in this patient with hepatitis-C. Small left pleural effusion.",
        {"pleural_effusion": P, "no_finding": A},
    ),
    (
        "4 scope",
        "Pneumothorax is not seen, but there is cardiomegaly.",
        {"pneumothorax": A, "cardiomegaly": P, "no_finding": A},
    ),
    # 5. hedges and differentials
    ("5 hedge", "Pneumonia is unlikely.", {"consolidation_pneumonia": A, "no_finding": P}),
    ("5 hedge", "Suggestion of a tiny left effusion.", {"pleural_effusion": U, "no_finding": U}),
    ("5 hedge", "Questionable right basilar opacity.", {"opacity": U, "no_finding": U}),
    (
        "5 hedge",
        "Query early pneumonia in the lingula.",
        {"consolidation_pneumonia": U, "no_finding": U},
    ),
    ("5 hedge", "Borderline cardiomegaly.", {"cardiomegaly": U, "no_finding": U}),
    ("5 hedge", "The heart size is borderline enlarged.", {"cardiomegaly": U, "no_finding": U}),
    (
        "5 technique",
        "Mild cardiomegaly, possibly accentuated by the portable technique.",
        {"cardiomegaly": U, "no_finding": U},
    ),
    (
        "5 differential",
        "Left basilar atelectasis or scarring.",
        {"atelectasis": U, "scarring_fibrosis": U, "no_finding": U},
    ),
    (
        "5 differential",
        "Patchy opacity in the right base representing atelectasis versus pneumonia.",
        {"opacity": P, "atelectasis": U, "consolidation_pneumonia": U, "no_finding": A},
    ),
    (
        "5 differential",
        "No pleural effusion or pneumothorax.",
        {"pleural_effusion": A, "pneumothorax": A, "no_finding": P},
    ),
    # 6. change language
    (
        "6 change",
        "No further increase in the size of the nodule.",
        {"nodule_mass": P, "no_finding": A},
    ),
    (
        "6 change",
        "No increase in the left pleural effusion.",
        {"pleural_effusion": P, "no_finding": A},
    ),
    (
        "6 change",
        "The right effusion has partially resolved.",
        {"pleural_effusion": P, "no_finding": A},
    ),
    ("6 change", "Decreased right pleural effusion.", {"pleural_effusion": P, "no_finding": A}),
    (
        "6 change",
        "Decreased effusion, no pneumothorax.",
        {"pleural_effusion": P, "pneumothorax": A, "no_finding": A},
    ),
    (
        "6 change",
        "Findings could represent resolving pneumonia, edema or effusion.",
        {
            "consolidation_pneumonia": U,
            "edema_congestion": U,
            "pleural_effusion": U,
            "no_finding": U,
        },
    ),
    ("6 change", "The left pneumothorax has resolved.", {"pneumothorax": A, "no_finding": P}),
    (
        "6 change",
        "Interval resolution of the right effusion.",
        {"pleural_effusion": A, "no_finding": P},
    ),
    ("6 change", "The effusion is no longer present.", {"pleural_effusion": A, "no_finding": P}),
    ("6 change", "No further evidence of pneumothorax.", {"pneumothorax": A, "no_finding": P}),
    # 7. requests assert nothing about this study
    ("7 request", "Recommend CT to evaluate for a pulmonary nodule.", {}),
    ("7 request", "Rule out pneumothorax.", {}),
    ("7 request", "?pneumonia", {}),
    ("7 request", "Pleural effusion?", {}),
    ("7 request", "Assess for pleural effusion.", {}),
    ("7 request", "Consider CT to further characterize the nodule.", {}),
    (
        "7 request",
        "Evaluate for pneumonia. Small left pleural effusion.",
        {"pleural_effusion": P, "no_finding": A},
    ),
]


@pytest.mark.parametrize(("kind", "text", "expected"), REPORTS, ids=[t for _, t, _ in REPORTS])
def test_report_labels(kind: str, text: str, expected: dict[str, str]) -> None:
    assert label_report(text) == expected, kind


# (kind, sentence, target, status): conditions the lexicon need not know
SPANS: list[tuple[str, str, str, str]] = [
    ("1 long cue", "She is in no acute distress this morning.", "acute distress", ABSENT),
    ("1 long cue", "No focal weakness of the left arm.", "focal weakness", ABSENT),
    ("2 spaces", "He denies   any   palpitations.", "palpitations", ABSENT),
    ("2 spaces", "Meningitis is  not  suspected clinically.", "Meningitis", ABSENT),
    ("3 post", "The stool test for rotavirus was negative.", "rotavirus", ABSENT),
    ("3 post", "Drug allergies: none.", "Drug allergies", ABSENT),
    ("3 post", "The rash on her forearm, resolved.", "rash", ABSENT),
    ("3 post", "His ankle is no longer swollen.", "swollen", ABSENT),
    ("4 scope", "No jaundice and positive for hepatomegaly.", "hepatomegaly", PRESENT),
    ("4 scope", "No nausea; persistent vomiting since Monday.", "vomiting", PRESENT),
    ("4 scope", "She has no fever but reports chills.", "chills", PRESENT),
    ("5 hedge", "Sepsis is unlikely.", "Sepsis", ABSENT),
    ("5 hedge", "Borderline splenomegaly.", "splenomegaly", UNCERTAIN),
    ("5 hedge", "Findings are suggestive of early cellulitis.", "cellulitis", UNCERTAIN),
    ("6 change", "No increase in the ascites.", "ascites", PRESENT),
    ("6 change", "The hematoma has partially resolved.", "hematoma", PRESENT),
    ("6 change", "The hematoma has resolved.", "hematoma", ABSENT),
    ("7 request", "Please evaluate for appendicitis.", "appendicitis", HYPOTHETICAL),
    ("7 request", "Cough and fever. ?tuberculosis", "tuberculosis", HYPOTHETICAL),
    ("7 request", "Recommend ultrasound to exclude cholecystitis.", "cholecystitis", HYPOTHETICAL),
    ("8 denies", "The patient denies chest pain.", "chest pain", ABSENT),
    ("8 denies", "She denied any fever, chills or night sweats.", "night sweats", ABSENT),
    ("8 denies", "Denies   dysuria.", "dysuria", ABSENT),
]


@pytest.mark.parametrize(
    ("kind", "text", "target", "status"), SPANS, ids=[f"{s} [{t}]" for _, s, t, _ in SPANS]
)
def test_span_status(kind: str, text: str, target: str, status: str) -> None:
    assert span_status(text, target) == status, kind


def test_sections_of_a_whole_report() -> None:
    """Kind 7: mentions outside the findings and impression assert nothing."""
    report = (
        "CLINICAL DETAILS: Fever. Known pleural effusion.\n"
        "INDICATION: Cough, evaluate for pneumonia.\n"
        "REASON FOR EXAM: ? pneumothorax\n"
        "COMPARISON: Prior film with cardiomegaly.\n"
        "FINDINGS: The lungs are clear. No pneumothorax.\n"
        "IMPRESSION: No acute cardiopulmonary disease.\n"
    )
    assert label_report(report) == {"opacity": A, "pneumothorax": A, "no_finding": P}
    mentions = extract(report)
    assert all(report.index("FINDINGS:") < m.start for m in mentions), mentions


def test_free_text_without_headers_is_all_findings() -> None:
    text = "History of smoking. Small left pleural effusion."
    assert label_report(text) == {"pleural_effusion": P, "no_finding": A}


def test_a_report_with_only_an_indication_asserts_nothing() -> None:
    assert label_report("INDICATION: Pneumonia.\nHISTORY: Pleural effusion.") == {}


def test_differential_keeps_location_and_cue() -> None:
    [atelectasis, scarring] = extract("Left basilar atelectasis or scarring.")
    assert (atelectasis.finding, atelectasis.status, atelectasis.cue) == ("atelectasis", U, "or")
    assert atelectasis.location == {"side": "left", "zone": "lower"}
    assert (scarring.finding, scarring.status) == ("scarring_fibrosis", U)
