"""Synthesis: findings extracted from reports, aggregated over retrieved cases.

Only the rule-based labeller is exported here; it needs spaCy and PyYAML, never torch
or a database connection. The names are loaded on first use, so that importing a
sibling (``casebase.synthesis.brief``, ``.aggregate``, ``.sections``) does not import spaCy.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
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
        labeller_version,
    )

__all__ = [
    "BACKEND",
    "LABELLER_VERSION",
    "Mention",
    "extract",
    "finding_ids",
    "label_report",
    "label_reports",
    "labeller_version",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'casebase.synthesis' has no attribute {name!r}")
    return getattr(import_module("casebase.synthesis.extract"), name)


class _Package(types.ModuleType):
    """Once a submodule is loaded, the import system binds it on its package under its
    own name; ``extract`` is also the labeller's function, which this package has always
    exported under that name. Bind the function, whichever import came first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
