"""Assertion rules of the rule-based labeller, one sentence per case.

Each case gives the report-level labels expected for one short text. ``EXACT`` cases
compare the whole dict (so no finding may be invented); ``SUBSET`` cases check only the
listed findings (the sentence may legitimately mention others). These sentences, not the
IU benchmark, define how hedges are handled.
"""

from __future__ import annotations

import pytest

from casebase.synthesis import LABELLER_VERSION, extract, finding_ids, label_report
from casebase.synthesis.extract import BACKEND, Mention

A, U, P = "absent", "uncertain", "present"

# (sentence, expected labels) — the whole dict must match.
EXACT: list[tuple[str, dict[str, str]]] = [
    # plain affirmation
    ("Mild cardiomegaly.", {"cardiomegaly": P, "no_finding": A}),
    ("Small right pleural effusion.", {"pleural_effusion": P, "no_finding": A}),
    # forward negation and negated lists
    ("No pneumothorax.", {"pneumothorax": A, "no_finding": P}),
    (
        "No pleural effusion, pneumothorax or consolidation.",
        {"pleural_effusion": A, "pneumothorax": A, "consolidation_pneumonia": A, "no_finding": P},
    ),
    (
        "There is no focal airspace consolidation, suspicious pulmonary opacity, pneumothorax,"
        " or large pleural effusion.",
        {
            "consolidation_pneumonia": A,
            "opacity": A,
            "pneumothorax": A,
            "pleural_effusion": A,
            "no_finding": P,
        },
    ),
    (
        "Lungs are hyperinflated without focal consolidation.",
        {"emphysema_hyperinflation": P, "consolidation_pneumonia": A, "no_finding": A},
    ),
    (
        "Negative for pneumothorax or pleural effusion.",
        {"pneumothorax": A, "pleural_effusion": A, "no_finding": P},
    ),
    ("No evidence of pneumonia.", {"consolidation_pneumonia": A, "no_finding": P}),
    ("There are no XXXX of a pleural effusion.", {"pleural_effusion": A, "no_finding": P}),
    # backward negation
    ("Pneumothorax is not seen.", {"pneumothorax": A, "no_finding": P}),
    (
        "Focal consolidation, effusion, or pneumothorax not identified.",
        {"consolidation_pneumonia": A, "pleural_effusion": A, "pneumothorax": A, "no_finding": P},
    ),
    # terminations
    (
        "No pneumothorax; small left effusion.",
        {"pneumothorax": A, "pleural_effusion": P, "no_finding": A},
    ),
    (
        "No pneumothorax but there is a small right effusion.",
        {"pneumothorax": A, "pleural_effusion": P, "no_finding": A},
    ),
    (
        "No focal consolidation, however there is mild cardiomegaly.",
        {"consolidation_pneumonia": A, "cardiomegaly": P, "no_finding": A},
    ),
    (
        "No effusion, stable cardiomegaly.",
        {"pleural_effusion": A, "cardiomegaly": P, "no_finding": A},
    ),
    (
        "No pneumothorax and the heart is enlarged.",
        {"pneumothorax": A, "cardiomegaly": P, "no_finding": A},
    ),
    # pseudo-negation
    ("No change in the small right pleural effusion.", {"pleural_effusion": P, "no_finding": A}),
    (
        "No significant interval change in left lower lobe atelectasis.",
        {"atelectasis": P, "no_finding": A},
    ),
    ("Without significant change of the mild cardiomegaly.", {"cardiomegaly": P, "no_finding": A}),
    ("No increase in the size of the nodule.", {"nodule_mass": P, "no_finding": A}),
    # resolution
    ("The left pleural effusion has resolved.", {"pleural_effusion": A, "no_finding": P}),
    (
        "Interval resolution of the right lower lobe pneumonia.",
        {"consolidation_pneumonia": A, "no_finding": P},
    ),
    ("The pneumothorax is no longer seen.", {"pneumothorax": A, "no_finding": P}),
    ("The chest tube has been removed.", {"chest_tube": A, "support_devices": A, "no_finding": P}),
    (
        "Interval removal of the endotracheal tube.",
        {"endotracheal_tube": A, "support_devices": A, "no_finding": P},
    ),
    # hedges
    ("Possible small left pleural effusion.", {"pleural_effusion": U, "no_finding": U}),
    ("Opacity may represent atelectasis.", {"opacity": P, "atelectasis": U, "no_finding": A}),
    ("Pneumonia cannot be excluded.", {"consolidation_pneumonia": U, "no_finding": U}),
    ("Cannot exclude a small pneumothorax.", {"pneumothorax": U, "no_finding": U}),
    ("Early pneumonia is not excluded.", {"consolidation_pneumonia": U, "no_finding": U}),
    (
        "Right basilar opacity concerning for pneumonia.",
        {"opacity": P, "consolidation_pneumonia": U, "no_finding": A},
    ),
    ("Findings are suggestive of pulmonary edema.", {"edema_congestion": U, "no_finding": U}),
    ("Streaky opacity, likely atelectasis.", {"opacity": P, "atelectasis": U, "no_finding": A}),
    ("Questionable small nodule in the right upper lobe.", {"nodule_mass": U, "no_finding": U}),
    (
        "Atelectasis versus pneumonia.",
        {"atelectasis": U, "consolidation_pneumonia": U, "no_finding": U},
    ),
    ("Differential includes pneumonia.", {"consolidation_pneumonia": U, "no_finding": U}),
    ("Probable hiatal hernia.", {"hiatal_hernia": U, "no_finding": U}),
    ("A small effusion is suspected.", {"pleural_effusion": U, "no_finding": U}),
    (
        "No pneumothorax, possible small effusion.",
        {"pneumothorax": A, "pleural_effusion": U, "no_finding": U},
    ),
    # negation reaches through a transparent link
    (
        "There is no focal air space opacity to suggest a pneumonia.",
        {"opacity": A, "consolidation_pneumonia": A, "no_finding": P},
    ),
    ("No definite pleural effusion.", {"pleural_effusion": A, "no_finding": P}),
    # statements of normality
    ("Heart size is normal.", {"cardiomegaly": A, "no_finding": P}),
    (
        "The cardiac silhouette and mediastinum size are within normal limits.",
        {"cardiomegaly": A, "no_finding": P},
    ),
    ("Heart size upper limits of normal.", {"cardiomegaly": A, "no_finding": P}),
    ("No acute cardiopulmonary abnormality.", {"no_finding": P}),
    ("Normal chest x-XXXX.", {"no_finding": P}),
    ("The lungs are clear.", {"opacity": A, "no_finding": P}),
    ("Lungs are well expanded.", {"low_lung_volumes": A, "no_finding": P}),
    ("Lung volumes are low normal.", {}),
    # no_finding derived from the other findings, whatever the impression says
    (
        "Calcified granuloma. No acute cardiopulmonary abnormality.",
        {"granuloma": P, "no_finding": A},
    ),
    # synonyms and rollups
    ("Hyperexpanded lungs consistent with COPD.", {"emphysema_hyperinflation": P, "no_finding": A}),
    ("Low lung volumes with bronchovascular crowding.", {"low_lung_volumes": P, "no_finding": A}),
    (
        "Left chest wall pacemaker with leads in the right atrium and ventricle.",
        {"pacemaker": P, "support_devices": P, "no_finding": A},
    ),
    (
        "Right IJ central venous catheter tip in the SVC.",
        {"central_line": P, "support_devices": P, "no_finding": A},
    ),
    (
        "Nasogastric tube courses below the diaphragm.",
        {"nasogastric_tube": P, "support_devices": P, "no_finding": A},
    ),
    (
        "Median sternotomy wires are intact.",
        {"sternotomy_wires": P, "support_devices": P, "no_finding": A},
    ),
    ("Small pericardial effusion.", {"pericardial_effusion": P, "no_finding": A}),
    (
        "Subcutaneous emphysema in the left chest wall.",
        {"subcutaneous_emphysema": P, "no_finding": A},
    ),
    # a nodular, round or mass-like opacity is both an opacity and a nodule-like lesion
    (
        "Nodular opacity in the left upper lobe.",
        {"opacity": P, "nodule_mass": P, "no_finding": A},
    ),
    ("Rounded dense opacity in the right base.", {"opacity": P, "nodule_mass": P, "no_finding": A}),
    ("Masslike opacity in the right apex.", {"opacity": P, "nodule_mass": P, "no_finding": A}),
    # reticulonodular opacities are interstitial markings and, as the IU coders code them,
    # nodules too
    (
        "Coarse reticulonodular interstitial opacities in both bases.",
        {"opacity": P, "interstitial_markings": P, "nodule_mass": P, "no_finding": A},
    ),
    ("Reticular-nodular changes at the apices.", {"nodule_mass": P, "no_finding": A}),
    # rules-2.2: a measured round opacity, a masslike finding of any kind and a lesion
    # placed in the lung are nodule-like; a lesion of a rib is not
    (
        "A rounded 2 cm opacity in the left lower lobe.",
        {"opacity": P, "nodule_mass": P, "no_finding": A},
    ),
    (
        "Ovoid 1.5 x 1.2 cm density in the right midlung.",
        {"opacity": P, "nodule_mass": P, "no_finding": A},
    ),
    (
        "Masslike consolidation in the right upper lobe.",
        {"consolidation_pneumonia": P, "nodule_mass": P, "no_finding": A},
    ),
    ("Left lower lobe lesion is unchanged.", {"nodule_mass": P, "no_finding": A}),
    ("Lesion in the right upper lobe.", {"nodule_mass": P, "no_finding": A}),
    ("Coin lesion in the left lung.", {"nodule_mass": P, "no_finding": A}),
    ("Cannonball lesions bilaterally.", {"nodule_mass": P, "no_finding": A}),
    ("No lesion in the right upper lobe.", {"nodule_mass": A, "no_finding": P}),
    ("Expansile lesion of the right posterior 9th rib.", {}),
    ("Soft tissue density overlying the right breast.", {}),
    # knee / MSK
    (
        "Moderate medial compartment joint space narrowing with marginal osteophytes.",
        {"joint_space_narrowing": P, "osteophyte": P, "no_finding": A},
    ),
    ("Tricompartmental osteoarthritis of the right knee.", {"osteoarthritis": P, "no_finding": A}),
    ("Small joint effusion.", {"joint_effusion": P, "no_finding": A}),
    ("No knee joint effusion.", {"joint_effusion": A, "no_finding": P}),
    ("Suprapatellar effusion cannot be excluded.", {"joint_effusion": U, "no_finding": U}),
    ("No fracture or dislocation.", {"fracture": A, "no_finding": P}),
    ("Joint spaces are preserved without osteophytes.", {"osteophyte": A, "no_finding": P}),
    # hedges phrased as a differential or a request (rules-1.1)
    (
        "Superimposed pneumonia would be a consideration.",
        {"consolidation_pneumonia": U, "no_finding": U},
    ),
    ("Early pneumonia is in the differential.", {"consolidation_pneumonia": U, "no_finding": U}),
    ("Correlate clinically for pneumonia.", {"consolidation_pneumonia": U, "no_finding": U}),
    ("A true pulmonary nodule is a possibility.", {"nodule_mass": U, "no_finding": U}),
    (
        "It is difficult to completely exclude a small pneumothorax.",
        {"pneumothorax": U, "no_finding": U},
    ),
    # a broken device is not a broken bone
    ("The inferior fixation screw is fractured.", {}),
    (
        "Fracture of the most superior sternotomy wire.",
        {"sternotomy_wires": P, "support_devices": P, "no_finding": A},
    ),
    # a disease name that contains a finding word
    ("Changes of cystic fibrosis.", {}),
    # phrasings added in lexicon 4
    ("Elevated left diaphragm.", {"elevated_hemidiaphragm": P, "no_finding": A}),
    ("Elevation of both hemidiaphragms.", {"elevated_hemidiaphragm": P, "no_finding": A}),
    ("Mild right hemidiaphragm elevation.", {"elevated_hemidiaphragm": P, "no_finding": A}),
    ("Mild dextrocurvature of the thoracic spine.", {"scoliosis": P, "no_finding": A}),
    ("Calcifications of the aortic arch.", {"atherosclerosis": P, "no_finding": A}),
    ("Calcified tortuous thoracic aorta.", {"atherosclerosis": P, "no_finding": A}),
    ("Calcified left paratracheal lymph node.", {"calcified_lymph_nodes": P, "no_finding": A}),
    ("Anterior wedge deformity of T11.", {"bone_deformity": P, "no_finding": A}),
    ("The lungs are hypoventilated.", {"low_lung_volumes": P, "no_finding": A}),
    ("Apical pleural-parenchymal scarring.", {"scarring_fibrosis": P, "no_finding": A}),
    ("Thickening of the minor fissure.", {"pleural_thickening": P, "no_finding": A}),
    (
        "Degenerative spurring of the thoracic spine.",
        {"degenerative_changes": P, "osteophyte": P, "no_finding": A},
    ),
    ("Lungs are expanded and clear airspace disease.", {"opacity": A, "no_finding": P}),
    ("Paratracheal density, likely vascular.", {}),
]

# (sentence, expected subset of the labels)
SUBSET: list[tuple[str, dict[str, str]]] = [
    (
        "Right lower lobe opacity may represent atelectasis versus pneumonia.",
        {"opacity": P, "atelectasis": U, "consolidation_pneumonia": U},
    ),
    (
        "The heart is enlarged and the effusion has resolved.",
        {"cardiomegaly": P, "pleural_effusion": A},
    ),
    ("Mild cardiomegaly. No pleural effusion.", {"cardiomegaly": P, "pleural_effusion": A}),
    (
        "Stable cardiomegaly with no evidence of edema or effusion.",
        {"cardiomegaly": P, "edema_congestion": A, "pleural_effusion": A},
    ),
    ("Fractures may not be demonstrated on this examination.", {"fracture": U}),
    (
        "No effusion.. Minimal right basilar atelectasis noted.",
        {"pleural_effusion": A, "atelectasis": P},
    ),
]


@pytest.mark.parametrize(("text", "expected"), EXACT, ids=[t for t, _ in EXACT])
def test_exact_labels(text: str, expected: dict[str, str]) -> None:
    assert label_report(text) == expected


@pytest.mark.parametrize(("text", "expected"), SUBSET, ids=[t for t, _ in SUBSET])
def test_subset_labels(text: str, expected: dict[str, str]) -> None:
    labels = label_report(text)
    assert {k: labels.get(k) for k in expected} == expected, labels


def test_mention_offsets_cue_and_location() -> None:
    text = "Heart size normal. No left pleural effusion. Possible right lower lobe pneumonia."
    mentions = extract(text)
    by_finding = {m.finding: m for m in mentions}
    effusion = by_finding["pleural_effusion"]
    assert text[effusion.start : effusion.end] == "pleural effusion"
    assert (effusion.status, effusion.cue) == (A, "no")
    assert effusion.location == {"side": "left"}
    assert effusion.sentence == "No left pleural effusion."
    pneumonia = by_finding["consolidation_pneumonia"]
    assert (pneumonia.status, pneumonia.cue) == (U, "possible")
    assert pneumonia.location == {"side": "right", "zone": "lower"}
    heart = by_finding["cardiomegaly"]
    assert (heart.status, heart.cue, heart.start) == (A, None, 0)


def test_bilateral_location() -> None:
    [m] = [m for m in extract("Bilateral pleural effusions, left greater than right.")]
    assert m.location == {"side": "bilateral"}
    [m] = extract("Bibasilar atelectasis.")
    assert m.location == {"side": "bilateral", "zone": "lower"}


def test_mention_is_frozen() -> None:
    [m] = extract("Cardiomegaly.")
    assert isinstance(m, Mention)
    with pytest.raises(AttributeError):
        m.status = "absent"  # type: ignore[misc]


def test_offsets_in_long_chunked_text() -> None:
    filler = "The lungs are clear. " * 5000  # longer than one processing chunk (100k)
    text = filler + "Small left pleural effusion."
    found = [m for m in extract(text) if m.finding == "pleural_effusion"]
    assert [(text[m.start : m.end], m.status) for m in found] == [("pleural effusion", P)]


def test_public_constants() -> None:
    ids = finding_ids()
    for required in (
        "no_finding",
        "cardiomegaly",
        "pleural_effusion",
        "pneumothorax",
        "opacity",
        "atelectasis",
        "consolidation_pneumonia",
        "edema_congestion",
        "nodule_mass",
        "fracture",
        "emphysema_hyperinflation",
        "granuloma",
        "support_devices",
        "low_lung_volumes",
        "hiatal_hernia",
        "osteoarthritis",
        "joint_space_narrowing",
        "osteophyte",
        "joint_effusion",
        "endotracheal_tube",
        "central_line",
        "chest_tube",
        "pacemaker",
        "sternotomy_wires",
        "nasogastric_tube",
    ):
        assert required in ids
    assert len(ids) == len(set(ids))
    assert BACKEND == "rules"
    assert LABELLER_VERSION
