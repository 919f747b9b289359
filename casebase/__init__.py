"""casebase: similar-case retrieval for medical images on PostgreSQL + pgvector.

Public API (imported lazily so ``import casebase`` stays light and never needs torch)::

    import casebase
    client = casebase.connect()            # embedded server unless DATABASE_URL is set
    hits = client.search(study_id="S-1", k=20, sex="F", age=(40, 60))
    print(client.brief(hits).render_text())
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "connect": "casebase.client",
    "Client": "casebase.client",
    "Filters": "casebase.retrieval.filters",
    "Hit": "casebase.retrieval.hits",
    "Brief": "casebase.synthesis.brief",
    "CasebaseError": "casebase.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'casebase' has no attribute {name!r}")
    return getattr(import_module(module), name)
