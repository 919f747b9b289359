"""Values produced by the LLM back end (``llm.py``), and a QA comparison with the rules.

Frozen dataclasses, importable without litellm or pydantic, so that code which only
reads an extraction (a brief, a QA report) does not need the ``llm`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from casebase.imaging.vocabulary import STATUSES


@dataclass(frozen=True)
class ReportText:
    """One report to label: its study id and its sanitised findings/impression text."""

    study_id: str
    text: str


@dataclass(frozen=True)
class LLMUsage:
    """Calls made, cache hits, tokens, and cost (None when no call could be priced)."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    def __add__(self, other: LLMUsage) -> LLMUsage:
        costs = [c for c in (self.cost_usd, other.cost_usd) if c is not None]
        return LLMUsage(
            self.calls + other.calls,
            self.cache_hits + other.cache_hits,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            sum(costs) if costs else None,
        )


@dataclass(frozen=True)
class LLMExtraction:
    """Per-study labels (like ``label_report``), per-study errors and notes.

    ``labels`` holds the studies that were labelled (an empty dict when the report had
    no text worth sending, explained in ``notes``); ``errors`` those that failed after
    retries, with a one-line reason. A study is in exactly one of the two.
    """

    labels: Mapping[str, Mapping[str, str]]
    errors: Mapping[str, str]
    notes: Mapping[str, str]
    model: str
    version: str
    usage: LLMUsage

    def counts(self) -> dict[str, dict[str, int]]:
        """finding → {status: number of studies}, recomputed from the labels alone."""
        out: dict[str, dict[str, int]] = {}
        for labels in self.labels.values():
            for finding, status in labels.items():
                out.setdefault(finding, dict.fromkeys(STATUSES, 0))[status] += 1
        return out

    def study_ids(self, finding: str, status: str = "present") -> list[str]:
        """The studies behind one count, in input order."""
        return [sid for sid, labels in self.labels.items() if labels.get(finding) == status]


@dataclass(frozen=True)
class NarrativeStatement:
    """One statement a model chose for a narrative (see ``llm_narrative``): a relation
    from a closed set, the finding ids it is about, and which numbers to cite."""

    relation: str
    findings: tuple[str, ...]
    cite: tuple[str, ...] = ()


@dataclass(frozen=True)
class Narrative:
    """A narrative over counts the code computed: ``text`` is casebase's rendering of the
    model's checked ``statements``, never the model's own words."""

    text: str
    model: str
    usage: LLMUsage
    statements: tuple[NarrativeStatement, ...] = ()


@dataclass(frozen=True)
class Disagreement:
    """One finding of one study on which the LLM and the rules differ (None: not mentioned)."""

    study_id: str
    finding: str
    llm: str | None
    rules: str | None


def compare_with_rules(
    extraction: LLMExtraction, rule_labels: Mapping[str, Mapping[str, str]]
) -> list[Disagreement]:
    """Findings on which the two back ends differ, per labelled study (for QA).

    Studies that failed or were skipped by the LLM are not compared; a finding only one
    back end mentions is a disagreement with ``None`` on the other side.
    """
    out: list[Disagreement] = []
    for sid, llm_labels in extraction.labels.items():
        rules = rule_labels.get(sid, {})
        for finding in sorted(set(llm_labels) | set(rules)):
            a, b = llm_labels.get(finding), rules.get(finding)
            if a != b:
                out.append(Disagreement(sid, finding, a, b))
    return out
