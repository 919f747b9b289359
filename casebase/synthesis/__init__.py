"""Synthesis: findings extracted from reports, aggregated over retrieved cases.

Only the rule-based labeller is exported here; it needs spaCy and PyYAML, never torch
or a database connection. spaCy is imported by the first call that parses text, not
here, so importing a light sub-module (the sanitiser imports ``sections``) stays light.
"""

from casebase.synthesis.extract import (
    BACKEND,
    LABELLER_VERSION,
    Mention,
    extract,
    finding_ids,
    label_report,
    label_reports,
)

__all__ = [
    "BACKEND",
    "LABELLER_VERSION",
    "Mention",
    "extract",
    "finding_ids",
    "label_report",
    "label_reports",
]
