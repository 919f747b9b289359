"""Report sections: the one section finder that both the sanitiser and the labeller use.

A whole report has headers ("INDICATION:", "FINDINGS:", "IMPRESSION:" …). Only the
findings and impression say what this study shows; what the history, indication,
comparison or technique sections mention ("Indication: rule out pneumonia") asserts
nothing about it. The sanitiser keeps only those two sections
(``casebase.ingest.sanitize``) and the labeller ignores mentions outside them
(``casebase.synthesis.extract``), from the same headers, found here.

It lives in synthesis because ingest imports synthesis (ingest labels reports at load
time), never the other way round.

Rules (they are the sanitiser's, unchanged): a header is a line's leading name followed
by a colon, an all-caps line of its own, or a name with a colon after a sentence end.
FINDINGS, IMPRESSION and their aliases are kept (FINDINGS/IMPRESSION counts as findings);
known non-reporting headers (HISTORY, INDICATION, CLINICAL…, COMPARISON, TECHNIQUE, EXAM,
ADDENDUM, RECOMMENDATION, identity headers) are dropped, as is anything before the first
header. A text with no findings/impression header that does not start with a header is
free text (case notes): all of it counts as findings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Section", "find_sections", "reporting_spans", "split_sections"]

_KEEP = {
    "findings": "findings",
    "finding": "findings",
    "findings/impression": "findings",
    "findings and impression": "findings",
    "impression/findings": "findings",
    "findings/conclusion": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "opinion": "impression",
    "summary": "impression",
    "interpretation": "impression",
}
_DROP = {
    "history",
    "clinical history",
    "medical history",
    "indication",
    "indications",
    "clinical indication",
    "reason for exam",
    "reason for examination",
    "reason for study",
    "clinical",
    "clinical information",
    "clinical details",
    "clinical notes",
    "clinical data",
    "comparison",
    "comparisons",
    "prior",
    "priors",
    "prior studies",
    "technique",
    "procedure",
    "exam",
    "examination",
    "study",
    "addendum",
    "recommendation",
    "recommendations",
    "signed by",
    "dictated by",
    "electronically signed by",
    "attending",
    "radiologist",
    "referring physician",
    "patient",
    "patient name",
    "name",
    "dob",
    "date of birth",
    "date",
    "mrn",
    "accession",
    "accession number",
    "age",
    "sex",
    "gender",
    "views",
    "contrast",
}
_HEADER_LINE = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z /&]{1,40}?)[ \t]*(:|$)")
_HEADER_INLINE = re.compile(r"(?<=[.!?])[ \t]+([A-Z][A-Za-z /&]{1,40}?)[ \t]*:")


@dataclass(frozen=True)
class Section:
    """One header and its body: ``kind`` is "findings", "impression" or "drop";
    ``start`` is where the header begins, ``body_start``/``end`` bound its body."""

    name: str
    kind: str
    start: int
    body_start: int
    end: int


def _header_kind(name: str, colon: bool) -> str | None:
    key = " ".join(name.lower().split())
    if not colon and not name.isupper():
        return None  # a header without a colon must be an all-caps line of its own
    if key in _KEEP:
        return _KEEP[key]
    return "drop" if key in _DROP else None


def find_sections(report: str) -> list[Section] | None:
    """The report's sections in order, or None for free text (no sectioning at all)."""
    heads: list[tuple[int, int, str, str]] = []
    for m in _HEADER_LINE.finditer(report):
        kind = _header_kind(m.group(1), m.group(2) == ":")
        if kind:
            heads.append((m.start(), m.end(), kind, m.group(1)))
    for m in _HEADER_INLINE.finditer(report):
        kind = _header_kind(m.group(1), True)
        if kind:
            heads.append((m.start(1), m.end(), kind, m.group(1)))
    heads.sort()
    starts_with_header = bool(heads) and not report[: heads[0][0]].strip()
    if not any(kind != "drop" for *_, kind, _ in heads) and not starts_with_header:
        # No findings/impression header and no leading header: free text (case notes),
        # where an inline "Accession:" is an identifier to scrub, not a section.
        return None
    return [
        Section(name, kind, start, end, heads[i + 1][0] if i + 1 < len(heads) else len(report))
        for i, (start, end, kind, name) in enumerate(heads)
    ]


def split_sections(report: str) -> tuple[str | None, str | None, bool, bool]:
    """(findings, impression, dropped_something, dropped_comparison) of a full report."""
    sections = find_sections(report)
    if sections is None:
        return report, None, False, False
    parts: dict[str, list[str]] = {"findings": [], "impression": []}
    dropped = bool(report[: sections[0].start].strip())
    comparison = False
    for sec in sections:
        body = report[sec.body_start : sec.end].strip()
        if sec.kind == "drop":
            dropped = dropped or bool(body)
            comparison = comparison or sec.name.lower().startswith(("compar", "prior"))
        elif body:
            parts[sec.kind].append(body)
    return (
        " ".join(parts["findings"]) or None,
        " ".join(parts["impression"]) or None,
        dropped,
        comparison,
    )


def reporting_spans(report: str) -> list[tuple[int, int]]:
    """Character ranges of the text that report on this study: the bodies of the
    findings and impression sections, or the whole text when it has no sections."""
    sections = find_sections(report)
    if sections is None:
        return [(0, len(report))]
    return [(s.body_start, s.end) for s in sections if s.kind != "drop"]
