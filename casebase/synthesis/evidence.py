"""A report's rule findings with the sentence that states each: what gets stored."""

from __future__ import annotations

from dataclasses import dataclass, field

from casebase.synthesis.cues import STRICT


@dataclass(frozen=True)
class LabelledFinding:
    finding: str
    status: str
    evidence: str | None
    location: dict = field(default_factory=dict)


def labelled_findings(
    findings: str | None, impression: str | None, *, convention: str = STRICT
) -> list[LabelledFinding]:
    """Report-level status per finding (``label_report``), with the first sentence that
    gave that status as evidence, so an analyst can see why a study was counted;
    ``convention``: the coding convention read into the cues (``conventions.yaml``)."""
    from casebase.synthesis.extract import extract, rollup

    text = "\n".join(t for t in (findings, impression) if t)
    # parsed once: label_report(text) is rollup(extract(text))
    mentions = extract(text, convention=convention)
    statuses = rollup(mentions)
    out = []
    for finding, status in sorted(statuses.items()):
        ev = next((m for m in mentions if m.finding == finding and m.status == status), None)
        out.append(
            LabelledFinding(
                finding=finding,
                status=status,
                evidence=ev.sentence.strip()[:500] if ev else None,
                location=dict(ev.location) if ev and ev.location else {},
            )
        )
    return out
