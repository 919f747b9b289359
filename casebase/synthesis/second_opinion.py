"""An LLM's second opinion on a brief: ``casebase brief --llm MODEL``, ``Client.brief(llm=...)``.

After the rule-based brief is built, the sanitised findings/impression of the hits it
counted (kept after quality exclusion, with a report; read from the ``casebase.studies``
view, never the raw report) go one by one to :meth:`LLMBackend.extract`. The brief gets
an :class:`~casebase.synthesis.brief.LLMSection`: counts recomputed from the validated
per-report labels, the studies behind each, the reports that failed (each with a
one-line reason; the others still count), tokens and cost, and, on request, a narrative
of the rule counts: statements the model chose, checked against those counts and written
by casebase's templates (``llm_narrative.py``), or the one-line reason it was refused.
The rule counts stay the brief's numbers. A missing model, a missing ``llm`` extra, or a
credential or model-name error fails the whole brief with a one-line
:class:`~casebase.errors.CasebaseError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from casebase.errors import ConfigError, InputError, LLMError
from casebase.synthesis.brief import Brief, LLMSection
from casebase.synthesis.llm_results import LLMUsage, ReportText

if TYPE_CHECKING:
    from casebase.config import Settings
    from casebase.synthesis.llm import LLMBackend

__all__ = ["NO_MODEL", "make_backend", "report_text", "second_opinion"]

NO_MODEL = (
    "no LLM model given: name one (e.g. --llm gemini/gemini-2.5-flash) or set CASEBASE_LLM_MODEL"
)


def make_backend(
    llm: str | LLMBackend | None,
    settings: Settings,
    *,
    api_base: str | None = None,
    workers: int | None = None,
    **options: Any,
) -> LLMBackend:
    """``llm`` as a back end: an :class:`LLMBackend` as given, or a litellm model string
    ("" or None: the ``CASEBASE_LLM_MODEL`` setting), cached under the settings' cache dir."""
    from casebase.synthesis.llm import LLMBackend

    if isinstance(llm, LLMBackend):
        if api_base is not None or workers is not None or options:
            raise InputError("give options to the LLMBackend itself, not next to it")
        return llm
    if llm is not None and not isinstance(llm, str):
        raise InputError(f"llm must be a litellm model string or an LLMBackend, not {llm!r}")
    model = (llm or "").strip() or (settings.llm_model or "").strip()
    if not model:
        raise ConfigError(NO_MODEL)
    if workers is not None:
        options["workers"] = workers
    options.setdefault("cache_dir", settings.cache_dir / "llm")
    return LLMBackend(model, api_base=api_base, **options)


def report_text(findings: str | None, impression: str | None) -> str:
    """What is sent for one study: its sanitised sections, as the rule labeller reads them."""
    return "\n".join(t for t in (findings, impression) if t)


def _spent(before: LLMUsage, after: LLMUsage) -> LLMUsage:
    """What a back end spent between two readings of its ``usage``."""
    if after.cost_usd is None or after.cost_usd == before.cost_usd:
        cost = None
    else:
        cost = round(after.cost_usd - (before.cost_usd or 0.0), 10)
    return LLMUsage(
        after.calls - before.calls,
        after.cache_hits - before.cache_hits,
        after.prompt_tokens - before.prompt_tokens,
        after.completion_tokens - before.completion_tokens,
        cost,
    )


def second_opinion(
    backend: LLMBackend, brief: Brief, texts: Mapping[str, str], *, narrate: bool = False
) -> LLMSection:
    """The LLM section for ``brief``; ``texts`` maps study id → sanitised report text.

    Only the studies the rule counts are over (kept hits with a report) are sent, in
    rank order, so both back ends count the same reports.
    """
    agg = brief.aggregate
    no_report = set(agg.no_report_ids)
    sent = [sid for sid in agg.study_ids if sid not in no_report and sid in texts]
    before = backend.usage
    extraction = backend.extract([ReportText(sid, texts[sid]) for sid in sent])
    narrative = narrative_error = None
    if narrate:
        if not agg.n_with_report or brief.k < 1:
            narrative_error = "no hit has a report, so there is nothing to narrate"
        elif not agg.counts:
            narrative_error = "no report mentions a finding, so there is nothing to narrate"
        else:
            try:
                narrative = backend.narrate(agg, k=brief.k, filters=brief.filters).text
            except LLMError as exc:  # the counts still stand; say in one line why not
                narrative_error = " ".join(str(exc).split())
    return LLMSection.from_extraction(
        extraction,
        sent,
        usage=_spent(before, backend.usage),
        narrative=narrative,
        narrative_error=narrative_error,
    )
