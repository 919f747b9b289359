"""The brief: an :class:`~casebase.synthesis.aggregate.Aggregate` with its context,
rendered as plain text, Markdown or JSON.

A brief is what a clinician or analyst reads, so it says in words what the numbers
are — counts over reports of visually similar past cases, with their study ids — and
what they are not: a diagnosis. Percentages are of the cases *with a report* (the
others cannot mention anything), and the number of cases without a report and of
cases set aside for quality flags is always stated. Text and Markdown truncate id
lists for reading ("… (+20 more)"); the JSON always carries every id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from casebase.errors import InputError
from casebase.synthesis.aggregate import Aggregate, FindingCount

__all__ = ["DISCLAIMER", "SCHEMA", "Brief"]

SCHEMA = "casebase.brief/1"
DISCLAIMER = ("Decision support, not a diagnosis: these counts describe what was reported "
              "for visually similar past cases, not what this image shows.")


def _jsonable(value: object, where: str) -> object:
    """Filters as JSON values (tuples and sets become lists) so JSON round-trips exactly."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"filter {where} is not a finite number: {value!r}")
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_jsonable(v, where) for v in value)  # type: ignore[type-var]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    raise InputError(f"filter {where} is not a JSON value: {value!r}")


def _pct(x: float) -> str:
    return f"{math.floor(x * 100 + 0.5)} %"


def _ids(ids: tuple[str, ...], limit: int) -> str:
    if not ids:
        return "—"
    shown = ", ".join(ids[:limit])
    return shown if len(ids) <= limit else f"{shown}, … (+{len(ids) - limit} more)"


def _value(v: object) -> str:
    return "/".join(str(x) for x in v) if isinstance(v, list) else str(v)


def describe_filters(filters: Mapping[str, object], exclude_flags: tuple[str, ...] = ()) -> str:
    """"CXR, sex F, age 40–60, excluding portable" from a filters mapping."""
    parts: list[str] = []
    age_min, age_max = filters.get("age_min"), filters.get("age_max")
    excluding = list(exclude_flags)
    for key, v in filters.items():
        if v is None or v == [] or key in ("age_max",):
            continue
        if key == "modality":
            parts.append(_value(v))
        elif key == "age_min" or (key == "age" and isinstance(v, list) and len(v) == 2):
            lo, hi = (age_min, age_max) if key == "age_min" else v  # type: ignore[misc]
            parts.append(f"age {lo}–{hi}" if hi is not None else f"age ≥ {lo}")
        elif key in ("exclude_flags", "exclude"):
            excluding += [f for f in (v if isinstance(v, list) else [v]) if f not in excluding]
        else:
            parts.append(f"{key.replace('_', ' ')} {_value(v)}")
    if age_max is not None and age_min is None:
        parts.append(f"age ≤ {age_max}")
    if excluding:
        parts.append("excluding " + ", ".join(str(f) for f in excluding))
    return ", ".join(parts)


@dataclass(frozen=True)
class Brief:
    """One search's synthesis. ``k`` is the number of cases asked for (the aggregate
    knows how many came back); ``query`` says what was searched, e.g. "study CASE-12",
    "image x.png" or "text 'left effusion'"; ``narrative`` is an optional LLM text."""

    aggregate: Aggregate
    k: int
    query: str
    filters: dict[str, object]
    space: str
    model: str
    generated_at: str
    narrative: str | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise InputError(f"k must be a non-negative integer, not {self.k!r}")
        object.__setattr__(self, "filters", _jsonable(dict(self.filters), "filters"))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    @classmethod
    def create(cls, aggregate: Aggregate, *, k: int, query: str,
               filters: Mapping[str, object] | None = None, space: str, model: str,
               narrative: str | None = None, notes: tuple[str, ...] = ()) -> Brief:
        """A brief stamped with the current UTC time."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(aggregate, k, query, dict(filters or {}), space, model, now, narrative,
                   notes)

    # ------------------------------------------------------------------ JSON

    def to_json(self, *, indent: int | None = 2) -> str:
        """Everything, every study id included; :meth:`from_json` restores an equal brief."""
        return json.dumps({
            "schema": SCHEMA, "k": self.k, "query": self.query, "filters": self.filters,
            "space": self.space, "model": self.model, "generated_at": self.generated_at,
            "narrative": self.narrative, "notes": list(self.notes),
            "aggregate": self.aggregate.to_dict(),
        }, ensure_ascii=False, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Brief:
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise InputError(f"brief is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InputError(f"not a {SCHEMA} document")
        try:
            return cls(aggregate=Aggregate.from_dict(data["aggregate"]), k=data["k"],
                       query=str(data["query"]), filters=dict(data["filters"]),
                       space=str(data["space"]), model=str(data["model"]),
                       generated_at=str(data["generated_at"]), narrative=data["narrative"],
                       notes=tuple(data["notes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"brief is missing or has a malformed field: {exc!r}") from exc

    # ------------------------------------------------------------------ text

    def _label(self, finding: str, labels: Mapping[str, str] | None) -> str:
        return (labels or {}).get(finding) or finding.replace("_", " ")

    def _scope(self) -> str:
        agg = self.aggregate
        scope = describe_filters(self.filters, agg.exclude_flags)
        requested = f"{self.k} requested; " if self.k != agg.k else ""
        return f"{requested}{scope + '; ' if scope else ''}space {self.space}"

    def _mention(self, c: FindingCount, labels: Mapping[str, str] | None) -> str:
        n = self.aggregate.n_with_report
        share = f"{_pct(c.present / n)}" if n else "n/a"
        if c.weighted_frequency is not None:
            share += f", similarity-weighted {_pct(c.weighted_frequency)}"
        return f"{c.present} mention {self._label(c.finding, labels)} ({share})"

    def _summary(self, labels: Mapping[str, str] | None, max_findings: int) -> str:
        agg = self.aggregate
        cases = "case" if agg.k == 1 else "cases"
        out = f"Of the {agg.k} most similar {cases} ({self._scope()})"
        if agg.excluded_by_quality:
            flags = ", ".join(agg.exclude_flags)
            verb = "was" if agg.excluded_by_quality == 1 else "were"
            out += (f", {agg.excluded_by_quality} {verb} set aside for quality flags "
                    f"({flags}), leaving {agg.n_hits}")
        present = [c for c in agg.counts if c.present > 0]
        if not agg.n_with_report:
            out += ": none has a report, so there is nothing to count."
        elif not present:
            out += ": no finding is mentioned as present."
        else:
            out += ": " + ", ".join(self._mention(c, labels) for c in present[:max_findings])
            if len(present) > max_findings:
                out += f", and {len(present) - max_findings} more findings (see JSON)"
            if agg.cooccurrence:
                out += "; " + ", ".join(
                    f"{c.count} mention both {self._label(c.a, labels)} and "
                    f"{self._label(c.b, labels)}" for c in agg.cooccurrence[:3])
            out += "."
        if agg.n_with_report and agg.n_with_report != agg.n_hits:
            out += f" Percentages are of the {agg.n_with_report} cases with a report."
        return out + f" Cases without a report: {len(agg.no_report_ids)}."

    def render_text(self, *, labels: Mapping[str, str] | None = None, max_ids: int = 10,
                    max_findings: int = 10) -> str:
        """A paragraph for people, then study ids per finding (truncated) and notes."""
        agg = self.aggregate
        lines = [f"Similar cases for {self.query} (model {self.model}, "
                 f"generated {self.generated_at})", "", self._summary(labels, max_findings)]
        uncertain = [c for c in agg.counts if c.uncertain]
        lines.append("Uncertain mentions are counted separately" + (
            ": " + ", ".join(f"{c.uncertain} {self._label(c.finding, labels)}"
                             for c in uncertain) + "." if uncertain else " (none here)."))
        listed = [c for c in agg.counts if c.present][:max_findings]
        if listed:
            lines += ["", "Study ids:"]
            lines += [f"- {self._label(c.finding, labels)}: {_ids(c.present_ids, max_ids)}"
                      for c in listed]
        if agg.excluded_ids:
            lines.append(f"- set aside for quality: {_ids(agg.excluded_ids, max_ids)}")
        if agg.no_report_ids:
            lines.append(f"- without a report: {_ids(agg.no_report_ids, max_ids)}")
        if self.narrative:
            lines += ["", f"Narrative: {self.narrative}"]
        lines += [f"Note: {n}" for n in self.notes]
        lines += ["", DISCLAIMER]
        return "\n".join(lines)

    def render_markdown(self, *, labels: Mapping[str, str] | None = None,
                        max_ids: int = 10) -> str:
        """A heading, the summary, a findings table, co-occurrence, and the disclaimer."""
        agg = self.aggregate

        def cell(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = [f"## Similar cases for {cell(self.query)}", "",
                 f"> **{DISCLAIMER}**", "",
                 f"Space `{self.space}` · model `{self.model}` · generated {self.generated_at}",
                 "", cell(self._summary(labels, max_findings=len(agg.counts) or 1)), ""]
        if agg.counts:
            lines += ["| finding | present | uncertain | absent | weighted % | study ids |",
                      "|---|---:|---:|---:|---:|---|"]
            for c in agg.counts:
                w = _pct(c.weighted_frequency) if c.weighted_frequency is not None else "—"
                lines.append(f"| {cell(self._label(c.finding, labels))} | {c.present} | "
                             f"{c.uncertain} | {c.absent} | {w} | "
                             f"{cell(_ids(c.present_ids, max_ids))} |")
            lines.append("")
        if agg.cooccurrence:
            lines += ["| both present | count | study ids |", "|---|---:|---|"]
            lines += [f"| {cell(self._label(c.a, labels))} + {cell(self._label(c.b, labels))}"
                      f" | {c.count} | {cell(_ids(c.study_ids, max_ids))} |"
                      for c in agg.cooccurrence]
            lines.append("")
        lines.append(f"Cases without a report: {len(agg.no_report_ids)}"
                     + (f" ({cell(_ids(agg.no_report_ids, max_ids))})"
                        if agg.no_report_ids else "") + ". Uncertain mentions are counted "
                     "separately from present ones.")
        if agg.excluded_ids:
            lines.append(f"Set aside for quality flags ({', '.join(agg.exclude_flags)}): "
                         f"{cell(_ids(agg.excluded_ids, max_ids))}.")
        if self.narrative:
            lines += ["", "### Narrative", "", self.narrative]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"
