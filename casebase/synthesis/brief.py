"""The brief: an :class:`~casebase.synthesis.aggregate.Aggregate` with its context,
rendered as plain text, Markdown or JSON.

A brief is what a clinician or analyst reads, so it says in words what the numbers
are — counts over reports of visually similar past cases, with their study ids — and
what they are not: a diagnosis. Percentages are of the cases *with a report* (the
others cannot mention anything), and the number of cases without a report and of
cases set aside for quality flags is always stated. Text and Markdown truncate id
lists for reading ("… (+20 more)"); the JSON always carries every id.

A brief may carry an :class:`LLMSection`: the same reports labelled by an LLM
(``casebase brief --llm MODEL``), with counts recomputed from its per-report labels,
the reports it failed on, and its token use. It is a second opinion, shown after the
rule counts, which stay the brief's numbers; where the two present-counts differ the
renderings say so ("LLM: 12 present (rules: 14)").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from casebase.errors import InputError
from casebase.synthesis.aggregate import Aggregate, FindingCount
from casebase.synthesis.disclaimer import DISCLAIMER
from casebase.synthesis.llm_results import STATUSES, LLMExtraction, LLMUsage

if TYPE_CHECKING:
    from casebase.retrieval.hits import Hit

__all__ = ["DISCLAIMER", "SCHEMA", "Brief", "LLMCount", "LLMSection"]

SCHEMA = "casebase.brief/1"


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
    """ "CXR, sex F, age 40–60, excluding portable" from a filters mapping."""
    parts: list[str] = []
    age_min, age_max = filters.get("age_min"), filters.get("age_max")
    excluding = list(exclude_flags)
    for key, v in filters.items():
        if v is None or v == [] or key in ("age_max",):
            continue
        if key == "modality":
            parts.append(_value(v))
        elif key == "age_min" or (key == "age" and isinstance(v, list) and len(v) == 2):
            lo, hi = (age_min, age_max) if key == "age_min" else tuple(v)  # type: ignore[arg-type]
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


def _short(text: str, limit: int = 160) -> str:
    """A reason shortened for reading (schema errors list every finding id); JSON has all."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(frozen=True)
class LLMCount:
    """How the LLM labelled one finding over the reports it labelled, with the ids."""

    finding: str
    present: int
    uncertain: int
    absent: int
    present_ids: tuple[str, ...] = ()
    uncertain_ids: tuple[str, ...] = ()
    absent_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LLMSection:
    """An LLM's second opinion on the brief's reports (never the brief's main numbers).

    ``sent_ids`` are the studies whose sanitised report was given to the model (the
    hits kept after quality exclusion that have a report, in rank order); ``counts``
    are recomputed from its validated per-report labels; ``errors`` maps each study it
    could not label to a one-line reason, and those studies count nowhere; ``notes``
    maps studies that had no text worth sending to why. ``narrative`` is an optional
    narrative of the *rule* counts: casebase's sentences for statements an LLM chose
    and the counts bear out (``llm_narrative.py``), never the model's own text;
    ``narrative_error`` says in one line why it is missing when it was asked for.
    """

    model: str
    version: str
    sent_ids: tuple[str, ...]
    counts: tuple[LLMCount, ...]
    errors: dict[str, str]
    usage: LLMUsage
    notes: dict[str, str] = field(default_factory=dict)
    narrative: str | None = None
    narrative_error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sent_ids", tuple(str(s) for s in self.sent_ids))
        object.__setattr__(self, "counts", tuple(self.counts))
        object.__setattr__(self, "errors", {str(k): str(v) for k, v in self.errors.items()})
        object.__setattr__(self, "notes", {str(k): str(v) for k, v in self.notes.items()})
        sent = set(self.sent_ids)
        stray = [sid for sid in self.errors if sid not in sent]
        for c in self.counts:
            stray += [
                sid
                for sid in (*c.present_ids, *c.uncertain_ids, *c.absent_ids)
                if sid not in sent or sid in self.errors
            ]
        if stray:
            raise InputError(
                f"LLM section counts or errors name studies that were not "
                f"labelled: {', '.join(sorted(set(stray))[:5])}"
            )

    @property
    def n_labelled(self) -> int:
        """Reports the model labelled (those that failed are in ``errors``)."""
        return len(self.sent_ids) - len(self.errors)

    def count(self, finding: str) -> LLMCount | None:
        return next((c for c in self.counts if c.finding == finding), None)

    @classmethod
    def from_extraction(
        cls,
        extraction: LLMExtraction,
        sent_ids: tuple[str, ...] | list[str],
        *,
        usage: LLMUsage | None = None,
        narrative: str | None = None,
        narrative_error: str | None = None,
    ) -> LLMSection:
        """Counts recomputed from ``extraction.labels`` alone, ids in ``sent_ids`` order.

        Only studies in ``sent_ids`` count, each at most once per finding, so the
        section can never hold more studies than were sent.
        """
        sent = tuple(sent_ids)
        order = {sid: i for i, sid in enumerate(sent)}
        labelled = sorted(
            (sid for sid in extraction.labels if sid in order and sid not in extraction.errors),
            key=order.__getitem__,
        )
        by_finding: dict[str, dict[str, list[str]]] = {}
        for sid in labelled:
            for finding, status in extraction.labels[sid].items():
                if status in STATUSES:
                    by_finding.setdefault(finding, {s: [] for s in STATUSES})[status].append(sid)
        counts = sorted(
            (
                LLMCount(
                    f,
                    len(v["present"]),
                    len(v["uncertain"]),
                    len(v["absent"]),
                    tuple(v["present"]),
                    tuple(v["uncertain"]),
                    tuple(v["absent"]),
                )
                for f, v in by_finding.items()
            ),
            key=lambda c: (-c.present, -c.uncertain, c.finding),
        )
        return cls(
            model=extraction.model,
            version=extraction.version,
            sent_ids=sent,
            counts=tuple(counts),
            errors={sid: extraction.errors[sid] for sid in sent if sid in extraction.errors},
            usage=usage if usage is not None else extraction.usage,
            notes={sid: extraction.notes[sid] for sid in sent if sid in extraction.notes},
            narrative=narrative,
            narrative_error=narrative_error,
        )

    def to_dict(self) -> dict[str, object]:
        u = self.usage
        return {
            "model": self.model,
            "version": self.version,
            "sent_ids": list(self.sent_ids),
            "counts": [
                {
                    "finding": c.finding,
                    "present": c.present,
                    "uncertain": c.uncertain,
                    "absent": c.absent,
                    "present_ids": list(c.present_ids),
                    "uncertain_ids": list(c.uncertain_ids),
                    "absent_ids": list(c.absent_ids),
                }
                for c in self.counts
            ],
            "errors": dict(self.errors),
            "notes": dict(self.notes),
            "usage": {
                "calls": u.calls,
                "cache_hits": u.cache_hits,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "cost_usd": u.cost_usd,
            },
            "narrative": self.narrative,
            "narrative_error": self.narrative_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LLMSection:
        try:
            u = data["usage"]
            usage = LLMUsage(
                calls=int(u["calls"]),
                cache_hits=int(u["cache_hits"]),
                prompt_tokens=int(u["prompt_tokens"]),
                completion_tokens=int(u["completion_tokens"]),
                cost_usd=None if u["cost_usd"] is None else float(u["cost_usd"]),
            )
            counts = tuple(
                LLMCount(
                    str(c["finding"]),
                    int(c["present"]),
                    int(c["uncertain"]),
                    int(c["absent"]),
                    tuple(c["present_ids"]),
                    tuple(c["uncertain_ids"]),
                    tuple(c["absent_ids"]),
                )
                for c in data["counts"]
            )
            return cls(
                model=str(data["model"]),
                version=str(data["version"]),
                sent_ids=tuple(data["sent_ids"]),
                counts=counts,
                errors=dict(data["errors"]),
                usage=usage,
                notes=dict(data.get("notes") or {}),
                narrative=data.get("narrative"),
                narrative_error=data.get("narrative_error"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"not a valid LLM section: {exc!r}") from exc

    def usage_line(self) -> str:
        u = self.usage
        cost = (
            f"${u.cost_usd:.4f}"
            if u.cost_usd is not None
            else "no cost"
            if not u.calls
            else "cost unknown"
        )
        return (
            f"{_plural(u.calls, 'call')} ({u.cache_hits} answered from the cache), "
            f"{u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, {cost}"
        )


@dataclass(frozen=True)
class Brief:
    """One search's synthesis. ``k`` is the number of cases asked for (the aggregate
    knows how many came back); ``query`` says what was searched, e.g. "study CASE-12",
    "image x.png" or "text 'left effusion'"; ``narrative`` is an optional text (e.g. an
    analyst's); ``llm`` an optional :class:`LLMSection` (a second opinion)."""

    aggregate: Aggregate
    k: int
    query: str
    filters: dict[str, object]
    space: str
    model: str
    generated_at: str
    narrative: str | None = None
    notes: tuple[str, ...] = field(default=())
    llm: LLMSection | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise InputError(f"k must be a non-negative integer, not {self.k!r}")
        object.__setattr__(self, "filters", _jsonable(dict(self.filters), "filters"))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    @classmethod
    def create(
        cls,
        aggregate: Aggregate,
        *,
        k: int,
        query: str,
        filters: Mapping[str, object] | None = None,
        space: str,
        model: str,
        narrative: str | None = None,
        notes: tuple[str, ...] = (),
        llm: LLMSection | None = None,
    ) -> Brief:
        """A brief stamped with the current UTC time."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(
            aggregate, k, query, dict(filters or {}), space, model, now, narrative, notes, llm
        )

    # ------------------------------------------------------------------ JSON

    def to_json(self, *, indent: int | None = 2) -> str:
        """Everything, every study id included; :meth:`from_json` restores an equal brief."""
        return json.dumps(
            {
                "schema": SCHEMA,
                "k": self.k,
                "query": self.query,
                "filters": self.filters,
                "space": self.space,
                "model": self.model,
                "generated_at": self.generated_at,
                "narrative": self.narrative,
                "notes": list(self.notes),
                "aggregate": self.aggregate.to_dict(),
                "llm": self.llm.to_dict() if self.llm is not None else None,
            },
            ensure_ascii=False,
            indent=indent,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Brief:
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise InputError(f"brief is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InputError(f"not a {SCHEMA} document")
        try:
            llm = data.get("llm")  # absent from briefs written before the LLM section
            return cls(
                aggregate=Aggregate.from_dict(data["aggregate"]),
                k=data["k"],
                query=str(data["query"]),
                filters=dict(data["filters"]),
                space=str(data["space"]),
                model=str(data["model"]),
                generated_at=str(data["generated_at"]),
                narrative=data["narrative"],
                notes=tuple(data["notes"]),
                llm=LLMSection.from_dict(llm) if llm is not None else None,
            )
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
            out += (
                f", {agg.excluded_by_quality} {verb} set aside for quality flags "
                f"({flags}), leaving {agg.n_hits}"
            )
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
                    f"{self._label(c.b, labels)}"
                    for c in agg.cooccurrence[:3]
                )
            out += "."
        if agg.n_with_report and agg.n_with_report != agg.n_hits:
            out += f" Percentages are of the {agg.n_with_report} cases with a report."
        return out + f" Cases without a report: {len(agg.no_report_ids)}."

    def summary(self, *, labels: Mapping[str, str] | None = None, max_findings: int = 10) -> str:
        """The brief's paragraph for people ("Of the 50 most similar cases ...")."""
        return self._summary(labels, max_findings)

    def render_html(
        self,
        hits: Sequence[Hit],
        *,
        thumbnails: Mapping[str, bytes] | None = None,
        query_thumbnail: bytes | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """One self-contained HTML page: query film, hits as thumbnails, a findings chart
        with the study ids behind each bar (see :mod:`casebase.synthesis.brief_html`)."""
        from casebase.synthesis.brief_html import render_html

        return render_html(
            self, hits, thumbnails=thumbnails, query_thumbnail=query_thumbnail, labels=labels
        )

    def render_text(
        self, *, labels: Mapping[str, str] | None = None, max_ids: int = 10, max_findings: int = 10
    ) -> str:
        """A paragraph for people, then study ids per finding (truncated) and notes."""
        agg = self.aggregate
        lines = [
            f"Similar cases for {self.query} (model {self.model}, generated {self.generated_at})",
            "",
            self._summary(labels, max_findings),
        ]
        uncertain = [c for c in agg.counts if c.uncertain]
        lines.append(
            "Uncertain mentions are counted separately"
            + (
                ": "
                + ", ".join(f"{c.uncertain} {self._label(c.finding, labels)}" for c in uncertain)
                + "."
                if uncertain
                else " (none here)."
            )
        )
        listed = [c for c in agg.counts if c.present][:max_findings]
        if listed:
            lines += ["", "Study ids:"]
            lines += [
                f"- {self._label(c.finding, labels)}: {_ids(c.present_ids, max_ids)}"
                for c in listed
            ]
        if agg.excluded_ids:
            lines.append(f"- set aside for quality: {_ids(agg.excluded_ids, max_ids)}")
        if agg.no_report_ids:
            lines.append(f"- without a report: {_ids(agg.no_report_ids, max_ids)}")
        if self.llm is not None:
            lines += ["", *self._llm_text(labels, max_ids, max_findings)]
        if self.narrative:
            lines += ["", f"Narrative: {self.narrative}"]
        lines += [f"Note: {n}" for n in self.notes]
        lines += ["", DISCLAIMER]
        return "\n".join(lines)

    # ------------------------------------------------------------------ LLM section

    def llm_rows(self) -> list[tuple[str, LLMCount | None, int]]:
        """(finding, LLM count or None, rules' present count) for every finding either
        back end has present, LLM order first: what the renderings compare."""
        if self.llm is None:
            return []
        rules = {c.finding: c.present for c in self.aggregate.counts}
        rows: list[tuple[str, LLMCount | None, int]] = [
            (c.finding, c, rules.get(c.finding, 0))
            for c in self.llm.counts
            if c.present or rules.get(c.finding, 0)
        ]
        shown = {f for f, _, _ in rows}
        rows += [
            (c.finding, None, c.present)
            for c in self.aggregate.counts
            if c.present and c.finding not in shown
        ]
        return rows

    def llm_disagreements(self) -> list[tuple[str, int, int]]:
        """(finding, LLM present, rules present) where the two present-counts differ."""
        out = []
        for finding, c, rules in self.llm_rows():
            llm = c.present if c else 0
            if llm != rules:
                out.append((finding, llm, rules))
        return out

    def _llm_head(self) -> str:
        llm = self.llm
        assert llm is not None
        if not llm.sent_ids:
            return "no hit has a report, so nothing was sent."
        failed = f", {len(llm.errors)} failed" if llm.errors else ""
        return f"{llm.n_labelled} of {_plural(len(llm.sent_ids), 'report')} labelled{failed}."

    def _llm_text(
        self, labels: Mapping[str, str] | None, max_ids: int, max_findings: int
    ) -> list[str]:
        llm = self.llm
        assert llm is not None
        lines = [
            f"LLM second opinion (model {llm.model}; the counts above, from the rule "
            f"labeller, remain the reference): {self._llm_head()}"
        ]
        rows = self.llm_rows()
        for finding, c, rules in rows[:max_findings]:
            present = c.present if c else 0
            versus = f"rules: {rules}" if present != rules else "same as rules"
            ids = f"; {_ids(c.present_ids, max_ids)}" if c and c.present_ids else ""
            lines.append(
                f"- {self._label(finding, labels)}: LLM: {present} present ({versus}){ids}"
            )
        if len(rows) > max_findings:
            lines.append(f"- and {len(rows) - max_findings} more findings (see JSON)")
        if llm.sent_ids and llm.n_labelled and not rows:
            lines.append("- the LLM finds no finding present, nor do the rules.")
        uncertain = [c for c in llm.counts if c.uncertain]
        if uncertain:
            lines.append(
                "- LLM uncertain mentions: "
                + ", ".join(f"{c.uncertain} {self._label(c.finding, labels)}" for c in uncertain)
                + "."
            )
        if llm.errors and self.llm_disagreements():
            lines.append(
                f"- counts can differ partly because the LLM could not label "
                f"{_plural(len(llm.errors), 'report')}."
            )
        for sid, reason in list(llm.errors.items())[:max_ids]:
            lines.append(f"- not labelled by the LLM: {sid} ({_short(reason)})")
        if len(llm.errors) > max_ids:
            lines.append(f"- and {len(llm.errors) - max_ids} more not labelled (see JSON)")
        lines.append(f"LLM usage: {llm.usage_line()}.")
        if llm.narrative:
            lines.append(f"LLM narrative of the rule counts: {llm.narrative}")
        if llm.narrative_error:
            lines.append(f"LLM narrative: none ({_short(llm.narrative_error)})")
        return lines

    def _llm_markdown(self, labels: Mapping[str, str] | None, max_ids: int, cell) -> list[str]:
        llm = self.llm
        assert llm is not None
        lines = [
            "### LLM second opinion",
            "",
            f"Model `{cell(llm.model)}`: {self._llm_head()} A check on the rule counts "
            "above, which remain the brief's numbers.",
            "",
        ]
        rules = {c.finding: c.present for c in self.aggregate.counts}
        rows: list[tuple[str, LLMCount | None]] = [(c.finding, c) for c in llm.counts]
        rows += [(f, None) for f, c, _ in self.llm_rows() if c is None]
        if rows:
            lines += [
                "| finding | LLM present | rules present | LLM uncertain | LLM absent "
                "| study ids (LLM present) |",
                "|---|---:|---:|---:|---:|---|",
            ]
            for finding, c in rows:
                counts = (
                    f"{c.present} | {rules.get(finding, 0)} | {c.uncertain} | "
                    f"{c.absent} | {cell(_ids(c.present_ids, max_ids))}"
                    if c
                    else f"0 | {rules.get(finding, 0)} | 0 | 0 | —"
                )
                lines.append(f"| {cell(self._label(finding, labels))} | {counts} |")
            lines.append("")
        differ = self.llm_disagreements()
        if differ:
            lines += [
                "Present counts differ: "
                + "; ".join(
                    f"{cell(self._label(f, labels))} (LLM: {a} present (rules: {b}))"
                    for f, a, b in differ
                )
                + ".",
                "",
            ]
        if llm.errors:
            lines += ["Not labelled by the LLM:", ""]
            lines += [
                f"- {cell(sid)}: {cell(_short(reason))}" for sid, reason in llm.errors.items()
            ]
            lines.append("")
        lines.append(f"LLM usage: {llm.usage_line()}.")
        if llm.narrative:
            lines += ["", f"**LLM narrative of the rule counts:** {cell(llm.narrative)}"]
        if llm.narrative_error:
            lines += ["", f"LLM narrative: none ({cell(_short(llm.narrative_error))})"]
        return lines

    def render_markdown(self, *, labels: Mapping[str, str] | None = None, max_ids: int = 10) -> str:
        """A heading, the summary, a findings table, co-occurrence, and the disclaimer."""
        agg = self.aggregate

        def cell(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = [
            f"## Similar cases for {cell(self.query)}",
            "",
            f"> **{DISCLAIMER}**",
            "",
            f"Space `{self.space}` · model `{self.model}` · generated {self.generated_at}",
            "",
            cell(self._summary(labels, max_findings=len(agg.counts) or 1)),
            "",
        ]
        if agg.counts:
            lines += [
                "| finding | present | uncertain | absent | weighted % | study ids |",
                "|---|---:|---:|---:|---:|---|",
            ]
            for c in agg.counts:
                w = _pct(c.weighted_frequency) if c.weighted_frequency is not None else "—"
                lines.append(
                    f"| {cell(self._label(c.finding, labels))} | {c.present} | "
                    f"{c.uncertain} | {c.absent} | {w} | "
                    f"{cell(_ids(c.present_ids, max_ids))} |"
                )
            lines.append("")
        if agg.cooccurrence:
            lines += ["| both present | count | study ids |", "|---|---:|---|"]
            lines += [
                f"| {cell(self._label(c.a, labels))} + {cell(self._label(c.b, labels))}"
                f" | {c.count} | {cell(_ids(c.study_ids, max_ids))} |"
                for c in agg.cooccurrence
            ]
            lines.append("")
        lines.append(
            f"Cases without a report: {len(agg.no_report_ids)}"
            + (f" ({cell(_ids(agg.no_report_ids, max_ids))})" if agg.no_report_ids else "")
            + ". Uncertain mentions are counted "
            "separately from present ones."
        )
        if agg.excluded_ids:
            lines.append(
                f"Set aside for quality flags ({', '.join(agg.exclude_flags)}): "
                f"{cell(_ids(agg.excluded_ids, max_ids))}."
            )
        if self.llm is not None:
            lines += ["", *self._llm_markdown(labels, max_ids, cell)]
        if self.narrative:
            lines += ["", "### Narrative", "", self.narrative]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"
