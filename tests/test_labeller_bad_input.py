"""The labeller on inputs it will meet in a real batch: nothing crashes, nothing invented."""

from __future__ import annotations

import random
import time

import pytest

from casebase.errors import ConfigError
from casebase.synthesis import extract, label_report, label_reports
from casebase.synthesis.lexicon import parse_lexicon

EMPTY_CASES = {
    "empty": "",
    "spaces": "   ",
    "whitespace": "\n\t \r\n  \n",
    "deid_tokens": "XXXX XXXX XXXX. XXXX XXXX, XXXX.\nXXXX",
    "punctuation": "... ;;; --- ,,, !!! ???",
    "digits": "1. 2. 3. 12/03/2019 10:45",
    "spanish": "El paciente refiere dolor torácico desde hace tres días; se solicita control.",
    "russian": "Лёгкие без очаговых и инфильтративных изменений. Сердце не расширено.",
    "chinese": "双肺纹理清晰，未见明显实变影。心影大小正常。",
    "arabic": "لا يوجد انصباب جنبي. القلب طبيعي الحجم.",
    "emoji": "🙂🙂🙂 ✔️ ✔️",
    "nul_bytes": "\x00\x00abc\x00\x01\x02",
}


@pytest.mark.parametrize("text", EMPTY_CASES.values(), ids=EMPTY_CASES.keys())
def test_no_findings_invented(text: str) -> None:
    assert label_report(text) == {}
    assert extract(text) == []


def test_binary_junk() -> None:
    rng = random.Random(1234)
    junk = bytes(rng.randrange(256) for _ in range(20_000)).decode("latin-1")
    labels = label_report(junk)
    assert isinstance(labels, dict)
    assert label_report(bytes(range(256)).decode("latin-1")) == {}


def test_undecodable_surrogates() -> None:
    text = b"\xff\xfe\xfa pleural".decode("utf-8", errors="surrogateescape")
    assert label_report(text) == {}


def test_one_megabyte_report_is_fast() -> None:
    sentence = "No pleural effusion or pneumothorax. Mild cardiomegaly. XXXX XXXX. "
    text = sentence * (1_000_000 // len(sentence) + 1)
    assert len(text) > 1_000_000
    # CPU time, not wall time: the test machines are shared and often oversubscribed.
    t0 = time.process_time()
    labels = label_report(text)
    elapsed = time.process_time() - t0
    assert labels == {
        "pleural_effusion": "absent",
        "pneumothorax": "absent",
        "cardiomegaly": "present",
        "no_finding": "absent",
    }
    assert elapsed < 5, f"1 MB took {elapsed:.1f} s of CPU"


def test_one_megabyte_without_boundaries() -> None:
    text = "a" * 1_100_000
    t0 = time.process_time()
    assert label_report(text) == {}
    assert time.process_time() - t0 < 5


def test_non_str_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        label_report(b"No pneumothorax.")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        label_report(None)  # type: ignore[arg-type]


def test_batch_keeps_order_and_empties() -> None:
    out = label_reports(["", "Cardiomegaly.", "XXXX", "No pneumothorax."])
    assert out == [
        {},
        {"cardiomegaly": "present", "no_finding": "absent"},
        {},
        {"pneumothorax": "absent", "no_finding": "present"},
    ]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("findings: [{id: Bad Id, label: x, synonyms: [a]}]", "'id' must be snake_case"),
        ("findings: [{id: foo, label: Foo, patterns: ['(unclosed']}]", "lexicon entry 'foo'"),
        ("findings: [{id: foo, label: Foo, synonyms: [a], parent: nope}]", "unknown parent"),
        ("findings: [{id: foo, label: Foo, synonyms: [a], colour: red}]", "unknown keys"),
        ("findings: [{id: foo, label: Foo}]", "needs synonyms"),
        ("findings: [{id: foo, synonyms: [a]}]", "'label' is required"),
        (
            "findings: [{id: foo, label: Foo, synonyms: [a], normal_status: maybe}]",
            "'normal_status'",
        ),
        (
            "findings: [{id: a, label: A, synonyms: [x], parent: b},"
            " {id: b, label: B, synonyms: [y], parent: a}]",
            "parent cycle",
        ),
        (
            "findings: [{id: a, label: A, synonyms: [x]}, {id: a, label: A, synonyms: [y]}]",
            "duplicate ids",
        ),
        ("just text", "expected a mapping"),
        ("findings: [1, 2]", "lexicon entry #0"),
    ],
)
def test_malformed_lexicon_names_the_entry(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_lexicon(yaml_text)
