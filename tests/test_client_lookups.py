"""The client's lookups that the commands used to do with SQL: studies by metadata, the
hits' image files, the contact sheet; checked against plain SQL on the generated cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

import casebase
from casebase.db.connection import connect


@pytest.fixture(scope="module")
def client(cohort_url):
    with casebase.connect(cohort_url) as c:
        yield c


def test_study_ids_match_sql(client, cohort_url):
    picked = client.study_ids(
        batch="cohort",
        modality="CXR",
        exclude_flags=["portable"],
        attribute_contains={"label": "pleural_effusion"},
    )
    with connect(cohort_url) as conn:
        expected = [
            r[0]
            for r in conn.execute(
                "SELECT study_id FROM casebase.studies WHERE batch = 'cohort' "
                "AND modality = 'CXR' AND NOT 'portable' = ANY(flags) "
                "AND attributes ->> 'label' LIKE '%pleural_effusion%' ORDER BY study_id"
            ).fetchall()
        ]
    assert picked == expected and len(expected) >= 2, (picked, expected)
    assert client.study_ids(batch="cohort", modality="CXR", limit=3) == [
        "DEMO-C0000",
        "DEMO-C0001",
        "DEMO-C0002",
    ]
    assert client.study_ids(batch="no-such-batch") == []
    assert len(client.study_ids(batch="cohort")) == 80


def test_image_uris_are_the_hits_files(client, cohort_url):
    hits = client.search(study_id="DEMO-C0005", k=6)
    uris = client.image_uris(hits)
    assert set(uris) == {h.image_id for h in hits}
    with connect(cohort_url) as conn:
        rows = conn.execute(
            "SELECT image_id, study_id, uri FROM casebase.images WHERE image_id = ANY(%s)",
            ([h.image_id for h in hits],),
        ).fetchall()
    assert uris == {image_id: uri for image_id, _, uri in rows}
    by_study = {study_id: uri for _, study_id, uri in rows}
    assert {h.study_id for h in hits} == set(by_study)
    assert all(Path(uri).is_file() for uri in uris.values())


def test_contact_sheet_for_each_kind_of_query(client, cohort_manifest, tmp_path):
    from PIL import Image

    hits = client.search(study_id="DEMO-C0005", k=4)
    image = cohort_manifest.parent / "images" / "cxr_0005.png"
    for name, query in {
        "study": {"study_id": "DEMO-C0005"},
        "image": {"image": image},
        "text": {"text": "pleural effusion"},
    }.items():
        sheet = client.contact_sheet(tmp_path / f"{name}.png", hits, **query)
        with Image.open(sheet) as img:
            assert img.size == (5 * 224, 224 + 58), name
    # the study's and the image's query tiles show the same film; the text's shows none
    with Image.open(tmp_path / "study.png") as a, Image.open(tmp_path / "image.png") as b:
        tile = (8, 8, 216, 216)
        assert a.crop(tile).tobytes() == b.crop(tile).tobytes()
    with Image.open(tmp_path / "text.png") as c, Image.open(tmp_path / "study.png") as a:
        assert c.crop(tile).tobytes() != a.crop(tile).tobytes()
