"""Synthesis: findings extracted from reports, aggregated over retrieved cases.

Only the rule-based labeller is exported here; it needs spaCy and PyYAML, never torch
or a database connection. The names are resolved on first use (PEP 562), so that
importing a light sub-module such as ``casebase.synthesis.sections`` (the sanitiser
does) does not import spaCy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("casebase.synthesis.extract"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
