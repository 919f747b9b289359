"""Metadata value parsing: exact values for good input, exact reasons for bad input."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from casebase.errors import InputError
from casebase.imaging.values import (
    DatePrecision,
    PartialDate,
    normalise_modality,
    normalise_view,
    parse_age,
    parse_date,
    parse_flags,
    parse_partial_date,
    parse_sex,
    patient_key,
    view_flags,
)
from casebase.imaging.vocabulary import Modality, Sex, View

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.parametrize(
    ("raw", "years"),
    [
        ("062Y", 62.0),
        ("005Y", 5.0),
        ("62", 62.0),  # the SIIM file: no unit
        (" 62 ", 62.0),
        ("62 years", 62.0),
        ("018M", 1.5),
        ("5M", 0.4167),
        ("3W", 0.0575),
        ("10D", 0.0274),
        ("0.5", 0.5),
        (62, 62.0),
        (62.5, 62.5),
        (0, 0.0),
        ("130", 130.0),
        ("", None),
        ("   ", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_parse_age(raw: object, years: float | None) -> None:
    assert parse_age(raw) == years


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (-3, "impossible age '-3'"),
        ("-3", "impossible age '-3'"),
        (250, "impossible age '250'"),
        ("250", "impossible age '250'"),
        ("131Y", "impossible age '131Y'"),
        ("abc", "invalid age 'abc'"),
        ("62X", "invalid age '62X'"),
        (True, "invalid age True"),
    ],
)
def test_parse_age_rejects(raw: object, reason: str) -> None:
    with pytest.raises(InputError) as info:
        parse_age(raw)
    assert str(info.value) == reason


@pytest.mark.parametrize(
    ("raw", "sex"),
    [
        ("M", "M"), ("m", "M"), ("male", "M"), ("Man", "M"),
        ("F", "F"), ("Female", "F"), ("WOMAN", "F"),
        ("O", "O"), ("other", "O"),
        ("U", None), ("unknown", None), ("", None), (None, None),
    ],
)  # fmt: skip
def test_parse_sex(raw: str | None, sex: str | None) -> None:
    assert parse_sex(raw) == sex
    if sex is not None:
        assert Sex(sex).value == sex


def test_parse_sex_rejects_garbage() -> None:
    with pytest.raises(InputError, match=r"^unknown sex code 'X7'$"):
        parse_sex("X7")


@pytest.mark.parametrize(
    ("modality", "body_part", "description", "expected"),
    [
        ("CR", "CHEST", None, "CXR"),
        ("DX", "THORAX", None, "CXR"),
        ("DR", "LUNG", None, "CXR"),
        ("X-ray", None, "chest radiograph", "CXR"),
        ("DX", None, "CHEST PA", "CXR"),
        ("CR", "KNEE", None, "KXR"),
        ("DX", None, "Knee 2 views", "KXR"),
        ("CR", "HAND", None, "XR"),
        ("X-ray", None, None, "XR"),
        ("xray", "", "", "XR"),
        ("CT", "CHEST", None, "CT"),
        ("ct", None, None, "CT"),
        ("MR", None, None, "MR"),
        ("MRI", None, None, "MR"),
        ("US", None, None, "US"),
        ("MG", None, None, "MG"),
        ("CXR", None, None, "CXR"),
    ],
)
def test_normalise_modality(
    modality: str, body_part: str | None, description: str | None, expected: str
) -> None:
    assert normalise_modality(modality, body_part, description=description) == expected
    assert Modality(expected).value == expected


@pytest.mark.parametrize(
    ("modality", "reason"),
    [("OT", "unknown modality 'OT'"), ("SR", "unknown modality 'SR'"), (None, "missing modality"),
     ("", "missing modality")],
)  # fmt: skip
def test_normalise_modality_rejects(modality: str | None, reason: str) -> None:
    with pytest.raises(InputError) as info:
        normalise_modality(modality, "CHEST")
    assert str(info.value) == reason


@pytest.mark.parametrize(
    ("raw", "view"),
    [
        ("PA", "PA"), ("pa", "PA"), ("AP", "AP"), ("AP Supine", "AP_SUPINE"),
        ("AP_SUPINE", "AP_SUPINE"), ("AP portable", "AP"), ("L", "LATERAL"),
        ("LL", "LATERAL"), ("RL", "LATERAL"), ("LAT", "LATERAL"), ("Lateral", "LATERAL"),
        ("LLD", "DECUBITUS"), ("RAO", "OBLIQUE"), ("Axial", "AXIAL"), ("Coronal", "CORONAL"),
        ("sagittal", "SAGITTAL"), ("MLO", "MLO"), ("", None), (None, None),
    ],
)  # fmt: skip
def test_normalise_view(raw: str | None, view: str | None) -> None:
    assert normalise_view(raw) == view
    if view is not None:
        assert View(view).value == view


def test_normalise_view_rejects() -> None:
    with pytest.raises(InputError, match=r"^unknown view 'upside down'$"):
        normalise_view("upside down")


def test_view_flags() -> None:
    assert view_flags("AP Supine") == {"portable", "supine"}
    assert view_flags("AP_SUPINE") == {"portable", "supine"}
    assert view_flags("AP portable") == {"portable"}
    assert view_flags("bedside AP") == {"portable"}
    assert view_flags("AP erect") == {"erect"}
    assert view_flags("LLD") == {"decubitus"}
    assert view_flags("PA") == set()
    assert view_flags(None) == set()


@pytest.mark.parametrize(
    ("raw", "date"),
    [
        ("20200125", dt.date(2020, 1, 25)),
        ("2020-03-04", dt.date(2020, 3, 4)),
        ("2020-03-04T10:11:12", dt.date(2020, 3, 4)),
        ("2020/3/4", dt.date(2020, 3, 4)),
        ("February 6, 2020", dt.date(2020, 2, 6)),
        ("Mar 3, 2020", dt.date(2020, 3, 3)),
        ("Sept. 3, 2019", dt.date(2019, 9, 3)),
        ("6 March 2020", dt.date(2020, 3, 6)),
        ("2/29/2020", dt.date(2020, 2, 29)),
        ("03/16/20", dt.date(2020, 3, 16)),
        ("11/27/19", dt.date(2019, 11, 27)),
        ("27/11/2019", dt.date(2019, 11, 27)),  # day first when it cannot be a month
        (dt.date(2020, 1, 2), dt.date(2020, 1, 2)),
        ("2020", None),  # year only: not made into 1 January
        ("March 2003", None),
        ("January 12", None),  # no year
        ("19010101", None),  # DICOM placeholder (the SIIM file)
        ("20201345", None),
        ("2/30/2020", None),
        ("not a date", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_date(raw: object, date: dt.date | None) -> None:
    assert parse_date(raw) == date


def test_parse_date_strict() -> None:
    assert parse_date("20200125", strict=True) == dt.date(2020, 1, 25)
    assert parse_date("", strict=True) is None
    with pytest.raises(InputError, match=r"^invalid date 'March 2003'$"):
        parse_date("March 2003", strict=True)


def test_parse_partial_date() -> None:
    assert parse_partial_date("2020") == PartialDate(2020)
    assert parse_partial_date("2020").precision is DatePrecision.YEAR
    assert parse_partial_date("March 2003") == PartialDate(2003, 3)
    assert parse_partial_date("March 2003").precision is DatePrecision.MONTH
    assert parse_partial_date("Mar 3, 2020") == PartialDate(2020, 3, 3)
    assert parse_partial_date("1850") is None  # before X-rays
    assert parse_partial_date("January 12") is None


def test_covid_metadata_values_all_parse() -> None:
    """Every value of the real covid manifest is accepted, and dates keep their precision."""
    with open(DATA / "covid_cxr" / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    precision: Counter[str | None] = Counter()
    for row in rows:
        parse_age(row["age"])
        parse_sex(row["sex"])
        assert normalise_view(row["view"]) in {v.value for v in View}
        assert normalise_modality(row["modality"], "chest") in {"CXR", "CT"}
        partial = parse_partial_date(row["date"])
        precision[partial.precision.value if partial else None] += 1
    assert len(rows) == 638
    assert precision == {"year": 405, "day": 96, "month": 5, None: 132}, precision


def test_parse_flags() -> None:
    assert parse_flags("Burned-in text; portable") == ("burned_in_text", "portable")
    assert parse_flags("portable;;PORTABLE; low contrast ") == ("low_contrast", "portable")
    assert parse_flags("") == ()
    assert parse_flags(None) == ()
    with pytest.raises(InputError, match=r"^invalid flag 'über'$"):
        parse_flags("portable; über")
    with pytest.raises(InputError, match=r"^invalid flag '3d'$"):
        parse_flags("3d")


def test_patient_key() -> None:
    key = patient_key("16d7f894-55d7-4d95-8957-d18987f0e981", "s3cret")
    assert key == patient_key(" 16d7f894-55d7-4d95-8957-d18987f0e981 ", "s3cret")
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    assert key != patient_key("16d7f894-55d7-4d95-8957-d18987f0e981", "other salt")
    assert "16d7f894" not in key
    with pytest.raises(InputError, match="salt is empty"):
        patient_key("123", "")
    with pytest.raises(InputError, match=r"^missing patient id$"):
        patient_key("", "s3cret")
