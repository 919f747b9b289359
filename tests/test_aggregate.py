"""Aggregation over hand-built hits: exact counts, ids, weights and co-occurrence."""

from __future__ import annotations

import json

import pytest

from casebase.errors import InputError
from casebase.retrieval.hits import Hit
from casebase.synthesis.aggregate import Aggregate, CoOccurrence, FindingCount, aggregate


def hit(rank: int, study_id: str, distance: float, flags: tuple[str, ...] = ()) -> Hit:
    return Hit(rank=rank, study_id=study_id, distance=distance, modality="CXR", flags=flags)


# similarities: S1 0.9, S2 0.8, S3 0.6, S4 0.5, S5 0.4 (portable), S6 -0.2, S7 0.7 (no report)
HITS = [
    hit(1, "S1", 0.1),
    hit(2, "S2", 0.2),
    hit(3, "S3", 0.4),
    hit(4, "S4", 0.5),
    hit(5, "S5", 0.6, ("portable",)),
    hit(6, "S6", 1.2),
    hit(7, "S7", 0.3),
]
FINDINGS = {
    "S1": {"pleural_effusion": "present", "cardiomegaly": "present", "edema": "uncertain"},
    "S2": {"pleural_effusion": "present", "cardiomegaly": "absent"},
    "S3": {"pleural_effusion": "uncertain", "cardiomegaly": "present", "edema": "present"},
    "S4": {},
    "S5": {"pleural_effusion": "present", "pneumothorax": "present"},
    "S6": {"pleural_effusion": "present", "pneumothorax": "absent"},
}


def test_counts_ids_and_denominators() -> None:
    agg = aggregate(HITS, FINDINGS)
    assert (agg.k, agg.n_hits, agg.n_with_report, agg.excluded_by_quality) == (7, 7, 6, 0)
    assert agg.study_ids == ("S1", "S2", "S3", "S4", "S5", "S6", "S7")
    assert agg.no_report_ids == ("S7",)
    pe = agg.count("pleural_effusion")
    assert pe is not None
    assert (pe.present, pe.uncertain, pe.absent) == (4, 1, 0)
    assert pe.present_ids == ("S1", "S2", "S5", "S6") and pe.uncertain_ids == ("S3",)
    cm = agg.count("cardiomegaly")
    assert cm == FindingCount(
        "cardiomegaly", 2, 0, 1, pytest.approx((0.9 + 0.6) / 3.2), ("S1", "S3"), (), ("S2",)
    )
    assert agg.frequency("pleural_effusion") == pytest.approx(4 / 6)
    assert agg.frequency("atelectasis") == 0.0 and agg.count("atelectasis") is None


def test_sorted_by_present_then_uncertain_then_name() -> None:
    agg = aggregate(HITS, FINDINGS)
    assert [c.finding for c in agg.counts] == [
        "pleural_effusion",
        "cardiomegaly",
        "edema",
        "pneumothorax",
    ]
    assert [(c.present, c.uncertain, c.absent) for c in agg.counts] == [
        (4, 1, 0),
        (2, 0, 1),
        (1, 1, 0),
        (1, 0, 1),
    ]


def test_similarity_weighted_frequency() -> None:
    agg = aggregate(HITS, FINDINGS)
    # weights = max(similarity, 0) over hits with a report: S1..S6 = .9 .8 .6 .5 .4 0
    total = 0.9 + 0.8 + 0.6 + 0.5 + 0.4 + 0.0
    pe = agg.count("pleural_effusion")
    assert pe is not None and pe.weighted_frequency == pytest.approx((0.9 + 0.8 + 0.4) / total)
    assert agg.weights == pytest.approx((0.9, 0.8, 0.6, 0.5, 0.4, 0.0, 0.7))
    uniform = aggregate(HITS, FINDINGS, weight="uniform")
    assert uniform.count("pleural_effusion").weighted_frequency == pytest.approx(4 / 6)
    assert uniform.weight == "uniform"


def test_closer_cases_weigh_more() -> None:
    near = [hit(1, "A", 0.05), hit(2, "B", 0.9)]
    agg = aggregate(near, {"A": {"nodule": "present"}, "B": {"nodule": "absent"}})
    assert agg.frequency("nodule") == 0.5
    assert agg.count("nodule").weighted_frequency == pytest.approx(0.95 / 1.05)


def test_cooccurrence_among_top_findings() -> None:
    agg = aggregate(HITS, FINDINGS)
    # ties keep the findings' ranking order; pairs never present together are left out
    assert agg.cooccurrence == (
        CoOccurrence("pleural_effusion", "cardiomegaly", 1, ("S1",)),
        CoOccurrence("pleural_effusion", "pneumothorax", 1, ("S5",)),
        CoOccurrence("cardiomegaly", "edema", 1, ("S3",)),
    )
    assert aggregate(HITS, FINDINGS, top=2).cooccurrence == (
        CoOccurrence("pleural_effusion", "cardiomegaly", 1, ("S1",)),
    )
    assert aggregate(HITS, FINDINGS, top=0).cooccurrence == ()


def test_cooccurrence_sorted_by_count() -> None:
    hits = [hit(i, f"S{i}", 0.1 * i) for i in range(1, 5)]
    found = {
        "S1": {"a": "present", "b": "present"},
        "S2": {"a": "present", "c": "present"},
        "S3": {"a": "present", "c": "present", "b": "uncertain"},
        "S4": {"c": "present", "a": "absent"},
    }
    agg = aggregate(hits, found)
    assert [(c.a, c.b, c.count, c.study_ids) for c in agg.cooccurrence] == [
        ("a", "c", 2, ("S2", "S3")),
        ("a", "b", 1, ("S1",)),
    ]


def test_quality_exclusion() -> None:
    agg = aggregate(HITS, FINDINGS, exclude_flags=("portable", "rotated"))
    assert (agg.k, agg.n_hits, agg.n_with_report, agg.excluded_by_quality) == (7, 6, 5, 1)
    assert agg.excluded_ids == ("S5",) and "S5" not in agg.study_ids
    assert agg.exclude_flags == ("portable", "rotated")
    pe = agg.count("pleural_effusion")
    assert pe.present_ids == ("S1", "S2", "S6")
    assert pe.weighted_frequency == pytest.approx((0.9 + 0.8) / (0.9 + 0.8 + 0.6 + 0.5))
    pt = agg.count("pneumothorax")
    assert (pt.present, pt.absent) == (0, 1)
    assert all(c.b != "pneumothorax" for c in agg.cooccurrence)


def test_no_reports_and_no_hits() -> None:
    agg = aggregate(HITS[:2], {})
    assert (agg.n_hits, agg.n_with_report, agg.counts) == (2, 0, ())
    assert agg.no_report_ids == ("S1", "S2") and agg.frequency("x") is None
    empty = aggregate([], {})
    assert (empty.k, empty.n_hits, empty.study_ids, empty.cooccurrence) == (0, 0, (), ())


def test_zero_total_weight_gives_none() -> None:
    agg = aggregate([hit(1, "A", 1.5)], {"A": {"nodule": "present"}})
    assert agg.count("nodule").weighted_frequency is None
    assert agg.frequency("nodule") == 1.0


@pytest.mark.parametrize(
    ("kwargs", "findings", "message"),
    [
        ({"weight": "rank"}, FINDINGS, "weight must be"),
        ({"top": -1}, FINDINGS, "top must be"),
        ({}, {"S1": {"edema": "maybe"}}, "status must be"),
    ],
)
def test_bad_input(kwargs: dict, findings: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        aggregate(HITS, findings, **kwargs)


def test_duplicate_study_is_an_error() -> None:
    with pytest.raises(InputError, match="S1"):
        aggregate([hit(1, "S1", 0.1), hit(2, "S1", 0.2)], {})


def test_dict_round_trip_is_exact() -> None:
    agg = aggregate(HITS, FINDINGS, exclude_flags=("portable",))
    data = agg.to_dict()
    again = Aggregate.from_dict(json.loads(json.dumps(data)))
    assert again == agg
    assert again.to_dict() == data


def test_from_dict_rejects_malformed() -> None:
    with pytest.raises(InputError, match="not a valid aggregate"):
        Aggregate.from_dict({"k": 1})
