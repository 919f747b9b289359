"""`Hit`: typed fields, and the JSON of `casebase search --json` kept key for key."""

from __future__ import annotations

import dataclasses
import json

from casebase.retrieval.hits import Hit


def test_hit_fields_are_typed_and_the_unset_ones_are_gone():
    names = [f.name for f in dataclasses.fields(Hit)]
    assert {"image_id", "route", "score"} <= set(names)
    assert not {"extra", "image_path", "patient_key"} & set(names)


def test_json_shape_is_unchanged():
    hit = Hit(
        rank=1,
        study_id="S-1",
        distance=0.25,
        modality="CXR",
        age=40.0,
        sex="F",
        view="PA",
        flags=("portable",),
        impression="No effusion.",
        sources=("image", "text"),
        image_id=7,
        route="hybrid",
        score=0.03,
    )
    assert json.loads(json.dumps(hit.to_dict())) == {
        "rank": 1,
        "study_id": "S-1",
        "distance": 0.25,
        "modality": "CXR",
        "age": 40.0,
        "sex": "F",
        "view": "PA",
        "flags": ["portable"],
        "impression": "No effusion.",
        "sources": ["image", "text"],
        "image_path": None,
        "patient_key": None,
        "extra": {"image_id": 7, "route": "hybrid", "score": 0.03},
        "similarity": 0.75,
    }
