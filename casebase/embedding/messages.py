"""What the embedding package says when something fails: the fixes it suggests, and any
exception as one line (a reject reason, a log line).

One place, so that every "weights missing" error names the same three ways out.
"""

from __future__ import annotations

import re

from casebase.errors import InputError

__all__ = ["EMBED_EXTRA_HINT", "FIX_HINT", "HF_TEXT_HINT", "one_line"]

FIX_HINT = (
    "download the weights on a machine with internet and copy its Hugging Face cache "
    "(set HF_HOME to it), or use --checkpoint PATH, or --model tiny-random for a smoke test"
)
EMBED_EXTRA_HINT = "install the embed extra: pip install 'casebase[embed]'"
HF_TEXT_HINT = "pip install 'casebase[hf]'"


def one_line(exc: BaseException) -> str:
    """``exc`` as one line of at most 300 characters; an ``InputError`` is its message
    (already a reason), anything else is prefixed with its type."""
    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    text = re.sub(r"\s+", " ", text).strip().rstrip(":") or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"
