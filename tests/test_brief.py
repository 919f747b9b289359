"""Briefs: JSON round trip and the exact wording of text and Markdown renderings."""

from __future__ import annotations

import json
import re

import pytest

from casebase.errors import InputError
from casebase.retrieval.hits import Hit
from casebase.synthesis.aggregate import aggregate
from casebase.synthesis.brief import DISCLAIMER, Brief, describe_filters


def _brief(**overrides: object) -> Brief:
    """50 hits: C00..C49, similarity 0.9 for the first 25 and 0.5 for the rest.

    pleural effusion present in C00..C22 (23), cardiomegaly in C16..C27 (12; 7 shared),
    pneumonia uncertain in C30, C31; C48, C49 have no report; C47 is portable.
    """
    hits = [
        Hit(
            rank=i + 1,
            study_id=f"C{i:02d}",
            distance=0.1 if i < 25 else 0.5,
            modality="CXR",
            flags=("portable",) if i == 47 else (),
        )
        for i in range(50)
    ]
    findings: dict[str, dict[str, str]] = {f"C{i:02d}": {} for i in range(48)}
    for i in range(23):
        findings[f"C{i:02d}"]["pleural_effusion"] = "present"
    for i in range(16, 28):
        findings[f"C{i:02d}"]["cardiomegaly"] = "present"
    for i in (30, 31):
        findings[f"C{i:02d}"]["pneumonia"] = "uncertain"
    findings["C40"]["pneumothorax"] = "absent"
    agg = aggregate(hits, findings, exclude_flags=overrides.pop("exclude_flags", ()))
    fields: dict = {
        "aggregate": agg,
        "k": 50,
        "query": "study CASE-12",
        "filters": {"modality": "CXR", "sex": "F", "age_min": 40, "age_max": 60},
        "space": "clip-vit-b-32",
        "model": "ViT-B-32/openai",
        "generated_at": "2026-11-03T10:00:00+00:00",
    }
    fields.update(overrides)
    return Brief(**fields)


def test_json_round_trip_is_exact() -> None:
    brief = _brief(
        narrative="Effusion dominates.",
        notes=("LLM counts checked",),
        filters={"modality": "CXR", "view": ("PA", "AP"), "age": [40, 60]},
        exclude_flags=("portable",),
    )
    again = Brief.from_json(brief.to_json())
    assert again == brief
    assert again.to_json() == brief.to_json()
    data = json.loads(brief.to_json())
    assert data["schema"] == "casebase.brief/1"
    # the JSON carries every id, untruncated
    assert data["aggregate"]["counts"][0]["present_ids"] == [f"C{i:02d}" for i in range(23)]


@pytest.mark.parametrize(
    "bad", ["{", "[]", '{"schema": "other"}', '{"schema": "casebase.brief/1", "k": 3}']
)
def test_from_json_rejects_bad_documents(bad: str) -> None:
    with pytest.raises(InputError):
        Brief.from_json(bad)


def test_invalid_fields_are_rejected() -> None:
    with pytest.raises(InputError, match="k must be"):
        _brief(k=-1)
    with pytest.raises(InputError, match="not a JSON value"):
        _brief(filters={"when": object()})


def test_render_text() -> None:
    text = _brief().render_text()
    assert text.startswith(
        "Similar cases for study CASE-12 (model ViT-B-32/openai, "
        "generated 2026-11-03T10:00:00+00:00)"
    )
    assert (
        "Of the 50 most similar cases (CXR, sex F, age 40–60; space clip-vit-b-32): "
        "23 mention pleural effusion (48 %, similarity-weighted 61 %), "
        "12 mention cardiomegaly (25 %, similarity-weighted 28 %); "
        "7 mention both pleural effusion and cardiomegaly."
    ) in text, text
    assert "Percentages are of the 48 cases with a report. Cases without a report: 2." in text
    assert "Uncertain mentions are counted separately: 2 pneumonia." in text
    assert (
        "- pleural effusion: C00, C01, C02, C03, C04, C05, C06, C07, C08, C09, … (+13 more)"
    ) in text
    assert "- cardiomegaly: C16, C17, C18, C19, C20, C21, C22, C23, C24, C25, … (+2 more)" in text
    assert "- without a report: C48, C49" in text
    assert text.endswith(DISCLAIMER)
    assert "not a diagnosis" in text


def test_weighted_percentages_are_similarity_weighted() -> None:
    agg = _brief().aggregate
    # 25 hits at similarity 0.9, 23 reported hits at 0.5
    total = 25 * 0.9 + 23 * 0.5
    assert agg.count("pleural_effusion").weighted_frequency == pytest.approx(23 * 0.9 / total)
    assert agg.count("cardiomegaly").weighted_frequency == pytest.approx(
        (9 * 0.9 + 3 * 0.5) / total
    )


def test_render_text_with_exclusion_labels_and_narrative() -> None:
    brief = _brief(
        exclude_flags=("portable",), narrative="Mostly effusions.", notes=("Extractor: rules v1",)
    )
    text = brief.render_text(labels={"pleural_effusion": "pleural effusion (any side)"}, max_ids=3)
    assert (
        "Of the 50 most similar cases (CXR, sex F, age 40–60, excluding portable; "
        "space clip-vit-b-32), 1 was set aside for quality flags (portable), leaving 49: "
        "23 mention pleural effusion (any side) (49 %"
    ) in text, text
    assert "- set aside for quality: C47" in text
    assert "- pleural effusion (any side): C00, C01, C02, … (+20 more)" in text
    assert "Narrative: Mostly effusions." in text and "Note: Extractor: rules v1" in text


def test_render_text_without_reports() -> None:
    hits = [Hit(rank=1, study_id="A", distance=0.2, modality="CXR")]
    brief = Brief(aggregate(hits, {}), 1, "image x.png", {}, "s", "m", "t")
    text = brief.render_text()
    assert "Of the 1 most similar case (space s): none has a report" in text
    assert "Cases without a report: 1." in text and DISCLAIMER in text


def test_render_markdown() -> None:
    md = _brief().render_markdown(max_ids=2)
    assert f"> **{DISCLAIMER}**" in md
    assert "| finding | present | uncertain | absent | weighted % | study ids |" in md
    assert "| pleural effusion | 23 | 0 | 0 | 61 % | C00, C01, … (+21 more) |" in md
    assert "| cardiomegaly | 12 | 0 | 0 | 28 % | C16, C17, … (+10 more) |" in md
    assert "| pneumonia | 0 | 2 | 0 | 0 % | — |" in md
    assert "| pneumothorax | 0 | 0 | 1 | 0 % | — |" in md
    assert "| pleural effusion + cardiomegaly | 7 | C16, C17, … (+5 more) |" in md
    assert "Cases without a report: 2 (C48, C49)." in md
    assert "23 mention pleural effusion" in md
    # every table row has the same number of cells
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert {len(re.findall(r"(?<!\\)\|", r)) for r in rows[:5]} == {7}


def test_markdown_escapes_pipes() -> None:
    md = _brief(query="text 'a|b'").render_markdown(labels={"cardiomegaly": "big|heart"})
    assert "text 'a\\|b'" in md and "| big\\|heart | 12 |" in md


def test_describe_filters() -> None:
    assert (
        describe_filters(
            {
                "modality": "CXR",
                "sex": "F",
                "age_min": 40,
                "age_max": 60,
                "exclude_flags": ["portable"],
            }
        )
        == "CXR, sex F, age 40–60, excluding portable"
    )
    assert describe_filters({"age_max": 60, "view": ["PA", "AP"]}) == "view PA/AP, age ≤ 60"
    assert (
        describe_filters({"age_min": 18, "sex": None}, ("rotated",))
        == "age ≥ 18, excluding rotated"
    )


def test_create_stamps_utc_time() -> None:
    agg = _brief().aggregate
    brief = Brief.create(agg, k=50, query="text 'left effusion'", space="s", model="m")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", brief.generated_at)
    assert brief.filters == {} and Brief.from_json(brief.to_json()) == brief
