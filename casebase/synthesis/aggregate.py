"""Aggregation of extracted findings over the k hits of one search.

"Of the 100 most similar cases, 73 mention pleural effusion, 41 cardiomegaly, 12 both"
is the product's headline, so every number here keeps the study ids it was counted
from: a reader (or a check on an LLM narrative) can always go back to the reports.

Decisions, and why:

* A study's findings come as ``{finding_id: "present" | "uncertain" | "absent"}``; a
  study without a report has no entry and counts in no denominator. A finding a report
  does not mention is neither absent nor present: it is simply not counted.
* **Similarity-weighted frequency** = sum of weights of the hits where the finding is
  present / sum of weights of all hits with a report, with weight = max(similarity, 0)
  (``weight="similarity"``) or 1 (``weight="uniform"``). Seed 000 failure mode 2: a
  plain count treats the 1st and the 100th neighbour alike, while the distribution of
  distances matters; weighting by similarity lets the closest cases speak louder. It is
  None when no hit has a report or all their weights are 0.
* **Quality exclusion** (seed 000 failure mode 3): hits carrying any of
  ``exclude_flags`` are dropped before counting; their ids are kept in ``excluded_ids``.
* Uncertain mentions are counted separately from present ones, never merged.
* Co-occurrence is computed among the ``top`` findings by present count (pairs present
  together in at least one study), since all pairs of a long tail are noise.
* Duplicate study ids in ``hits`` are an error: a search returns one row per study, and
  counting one twice would silently inflate every number.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from casebase.errors import InputError
from casebase.imaging.vocabulary import STATUSES
from casebase.retrieval.hits import Hit

logger = logging.getLogger(__name__)

__all__ = ["STATUSES", "WEIGHTS", "Aggregate", "CoOccurrence", "FindingCount", "aggregate"]

WEIGHTS = ("similarity", "uniform")


@dataclass(frozen=True)
class FindingCount:
    """How the hits' reports mention one finding, with the ids behind each count."""

    finding: str
    present: int
    uncertain: int
    absent: int
    weighted_frequency: float | None
    present_ids: tuple[str, ...] = ()
    uncertain_ids: tuple[str, ...] = ()
    absent_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CoOccurrence:
    """Two findings present in the same reports."""

    a: str
    b: str
    count: int
    study_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Aggregate:
    """Counts over the hits that survived quality exclusion, in hit (rank) order.

    ``k`` is the number of hits given; ``n_hits`` those kept; ``n_with_report`` those of
    them with a report, the denominator of every frequency. ``weights`` is aligned with
    ``study_ids`` so a weighted frequency can be recomputed by hand.
    """

    k: int
    n_hits: int
    n_with_report: int
    counts: tuple[FindingCount, ...]
    cooccurrence: tuple[CoOccurrence, ...]
    excluded_by_quality: int
    study_ids: tuple[str, ...]
    excluded_ids: tuple[str, ...] = ()
    no_report_ids: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    weight: str = "similarity"
    exclude_flags: tuple[str, ...] = ()

    def count(self, finding: str) -> FindingCount | None:
        """The count of one finding, or None when no kept report mentions it."""
        return next((c for c in self.counts if c.finding == finding), None)

    def frequency(self, finding: str) -> float | None:
        """Unweighted share of reported hits where ``finding`` is present."""
        if not self.n_with_report:
            return None
        c = self.count(finding)
        return (c.present if c else 0) / self.n_with_report

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` restores an equal object."""
        return {
            "k": self.k,
            "n_hits": self.n_hits,
            "n_with_report": self.n_with_report,
            "counts": [
                {
                    "finding": c.finding,
                    "present": c.present,
                    "uncertain": c.uncertain,
                    "absent": c.absent,
                    "weighted_frequency": c.weighted_frequency,
                    "present_ids": list(c.present_ids),
                    "uncertain_ids": list(c.uncertain_ids),
                    "absent_ids": list(c.absent_ids),
                }
                for c in self.counts
            ],
            "cooccurrence": [
                {"a": c.a, "b": c.b, "count": c.count, "study_ids": list(c.study_ids)}
                for c in self.cooccurrence
            ],
            "excluded_by_quality": self.excluded_by_quality,
            "study_ids": list(self.study_ids),
            "excluded_ids": list(self.excluded_ids),
            "no_report_ids": list(self.no_report_ids),
            "weights": list(self.weights),
            "weight": self.weight,
            "exclude_flags": list(self.exclude_flags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Aggregate:
        """Inverse of :meth:`to_dict`; malformed data is an :class:`InputError`."""
        try:
            counts = tuple(
                FindingCount(
                    finding=str(c["finding"]),
                    present=int(c["present"]),
                    uncertain=int(c["uncertain"]),
                    absent=int(c["absent"]),
                    weighted_frequency=None
                    if c["weighted_frequency"] is None
                    else float(c["weighted_frequency"]),
                    present_ids=tuple(c["present_ids"]),
                    uncertain_ids=tuple(c["uncertain_ids"]),
                    absent_ids=tuple(c["absent_ids"]),
                )
                for c in data["counts"]
            )
            cooc = tuple(
                CoOccurrence(str(c["a"]), str(c["b"]), int(c["count"]), tuple(c["study_ids"]))
                for c in data["cooccurrence"]
            )
            return cls(
                k=int(data["k"]),
                n_hits=int(data["n_hits"]),
                n_with_report=int(data["n_with_report"]),
                counts=counts,
                cooccurrence=cooc,
                excluded_by_quality=int(data["excluded_by_quality"]),
                study_ids=tuple(data["study_ids"]),
                excluded_ids=tuple(data.get("excluded_ids", ())),
                no_report_ids=tuple(data.get("no_report_ids", ())),
                weights=tuple(float(w) for w in data.get("weights", ())),
                weight=str(data.get("weight", "similarity")),
                exclude_flags=tuple(data.get("exclude_flags", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"not a valid aggregate: {exc!r}") from exc


def _weight(hit: Hit, scheme: str) -> float:
    return 1.0 if scheme == "uniform" else max(hit.similarity, 0.0)


def aggregate(
    hits: Sequence[Hit],
    findings: Mapping[str, Mapping[str, str]],
    *,
    exclude_flags: Sequence[str] = (),
    top: int = 6,
    weight: str = "similarity",
) -> Aggregate:
    """Count, weight and pair the findings of ``hits``; see the module docstring."""
    if weight not in WEIGHTS:
        raise InputError(f"weight must be one of {', '.join(WEIGHTS)}, not {weight!r}")
    if top < 0:
        raise InputError(f"top must be >= 0, not {top}")
    seen: set[str] = set()
    for hit in hits:
        if hit.study_id in seen:
            raise InputError(f"study {hit.study_id!r} appears twice among the hits")
        seen.add(hit.study_id)

    excluded = set(exclude_flags)
    kept = [h for h in hits if not excluded.intersection(h.flags)]
    excluded_ids = tuple(h.study_id for h in hits if excluded.intersection(h.flags))
    reported = [h for h in kept if h.study_id in findings]
    weights = {h.study_id: _weight(h, weight) for h in kept}
    total_weight = sum(weights[h.study_id] for h in reported)

    ids: dict[str, dict[str, list[str]]] = {}
    for hit in reported:
        for finding, status in findings[hit.study_id].items():
            if status not in STATUSES:
                raise InputError(
                    f"study {hit.study_id!r}, finding {finding!r}: status must "
                    f"be one of {', '.join(STATUSES)}, not {status!r}"
                )
            ids.setdefault(finding, {s: [] for s in STATUSES})[status].append(hit.study_id)

    counts = []
    for finding, by_status in ids.items():
        w = sum(weights[s] for s in by_status["present"])
        counts.append(
            FindingCount(
                finding=finding,
                present=len(by_status["present"]),
                uncertain=len(by_status["uncertain"]),
                absent=len(by_status["absent"]),
                weighted_frequency=w / total_weight if total_weight > 0 else None,
                present_ids=tuple(by_status["present"]),
                uncertain_ids=tuple(by_status["uncertain"]),
                absent_ids=tuple(by_status["absent"]),
            )
        )
    counts.sort(key=lambda c: (-c.present, -c.uncertain, -(c.weighted_frequency or 0.0), c.finding))

    leaders = [c for c in counts if c.present > 0][:top]
    cooc = []
    for x, y in combinations(leaders, 2):
        both = set(x.present_ids) & set(y.present_ids)
        if both:
            cooc.append(
                CoOccurrence(
                    x.finding, y.finding, len(both), tuple(s for s in x.present_ids if s in both)
                )
            )
    cooc.sort(key=lambda c: -c.count)  # stable: ties keep the findings' ranking order

    if excluded_ids:
        logger.debug(
            "excluded %d of %d hits by quality flags %s",
            len(excluded_ids),
            len(hits),
            sorted(excluded),
        )
    return Aggregate(
        k=len(hits),
        n_hits=len(kept),
        n_with_report=len(reported),
        counts=tuple(counts),
        cooccurrence=tuple(cooc),
        excluded_by_quality=len(excluded_ids),
        study_ids=tuple(h.study_id for h in kept),
        excluded_ids=excluded_ids,
        no_report_ids=tuple(h.study_id for h in kept if h.study_id not in findings),
        weights=tuple(weights[h.study_id] for h in kept),
        weight=weight,
        exclude_flags=tuple(exclude_flags),
    )
