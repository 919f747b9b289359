"""Composed queries: "cases like this film, but with a left pleural effusion".

The rule (SQL: ``casebase.similar_composed``, which every path calls)::

    q' = normalize(normalize(v) + w * (normalize(t(modify)) - normalize(t(neutral))))

``v`` is the image query's vector, ``t`` the space's own text tower and ``w`` the modify
weight (0-10; 0 is the plain search). ``t(modify) - t(neutral)`` is the step from "a film
with nothing in particular" to "a film with the finding" in the model's joint space, so
the image's other content stays in the query while it moves toward the finding. The
neutral prompt is ``NEUTRAL_PROMPT``, "no finding": the text ``casebase train`` pairs
with a study without findings, so a space trained here has learned it, and it means the
same to a general CLIP model. ``benchmarks/composed.py`` measures the rule, and compares
neutral prompts.

SQL cannot run a text tower: the client computes ``t(...)`` here and passes vectors to
``casebase.similar_composed``; for ``casebase.similar_cases_modified`` (by study id, in
plain SQL) the prompts are embedded once and stored per space (``store_prompts``,
``casebase prompts add``) in ``casebase.prompt_embedding``.

The text is checked before any model loads: not empty, at most ``MAX_PROMPT_CHARS``
characters (the SQL functions say the same in the same words), and, once the model is
loaded, no longer than the text tower's context (open_clip would cut it silently).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from casebase.db.spaces import Space
from casebase.errors import ModelError, QueryError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

#: The neutral prompt, also the default of ``casebase.similar_cases_modified(neutral)``.
NEUTRAL_PROMPT = "no finding"
#: The longest modify or neutral text (characters); SQL checks the same bound.
MAX_PROMPT_CHARS = 300
#: The modify weight's range; SQL checks the same bounds.
MAX_MODIFY_WEIGHT = 10.0
_BLANKS = " \t\n\r"  # what SQL's btrim(text, E' \t\n\r') strips too


def check_prompt(text: str | None, what: str = "modify") -> str:
    """The stripped text, or a QueryError in the words of the SQL functions."""
    stripped = (text or "").strip(_BLANKS)
    if not stripped:
        raise QueryError(f"the {what} text is empty")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise QueryError(
            f"the {what} text has {len(stripped)} characters; at most {MAX_PROMPT_CHARS}"
        )
    return stripped


def check_weight(weight: float) -> float:
    """The weight as a float, or a QueryError in the words of ``similar_composed``."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise QueryError(f"modify_weight must be a number, got {weight!r}") from None
    if not (math.isfinite(w) and 0 <= w <= MAX_MODIFY_WEIGHT):
        raise QueryError(f"modify_weight must be between 0 and {MAX_MODIFY_WEIGHT:g}, got {w:g}")
    return w


# ---------------------------------------------------------------- the text tower


def text_tower(space: Space, device: str | None = None):
    """The space's encoder, checked to have a text tower (parameters outside the image
    tower and the logit scale/bias): a composed query needs one."""
    from casebase.retrieval.encode import encoder_for_space

    encoder = encoder_for_space(space, device)
    check_text_tower(encoder, space.name)
    return encoder


def check_text_tower(encoder: Any, space_name: str) -> None:
    model = encoder.model
    text_params = [
        name
        for name, _ in model.named_parameters()
        if not name.startswith(("visual.", "logit_scale", "logit_bias"))
    ]
    if not callable(getattr(model, "encode_text", None)) or not text_params:
        raise ModelError(
            f"the model of space {space_name!r} has no text tower, so it cannot embed a "
            "modify text: use a space whose model has one (--space)"
        )


@lru_cache(maxsize=8)
def _open_clip_tokenizer(arch: str):
    import open_clip

    return open_clip.get_tokenizer(arch)


def check_context(encoder: Any, text: str, what: str = "modify") -> None:
    """A text longer than the text tower's context would be cut silently: refuse it.
    Only open_clip's own BPE tokenizer is counted; others (Hugging Face) are not."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = _open_clip_tokenizer(encoder.arch)
    if not isinstance(tokenizer, SimpleTokenizer):
        return
    n_tokens = len(tokenizer.encode(text)) + 2  # start and end of text
    if n_tokens > tokenizer.context_length:
        raise QueryError(
            f"the {what} text is {n_tokens} tokens; the text tower of this space reads "
            f"{tokenizer.context_length} (with start and end): shorten it"
        )


def prompt_vectors(
    space: Space, prompts: Sequence[str], device: str | None = None
) -> list[np.ndarray]:
    """The text-tower vector of each (checked) prompt, unit length."""
    encoder = text_tower(space, device)
    for prompt in prompts:
        check_context(encoder, prompt)
    return list(encoder.encode_text(list(prompts)))


@dataclass(frozen=True)
class ModifyVectors:
    """What ``similar_composed`` takes besides the image query: t(modify), t(neutral), w."""

    modify: np.ndarray
    neutral: np.ndarray
    weight: float


def modify_vectors(
    space: Space, modify: str, weight: float, device: str | None = None
) -> ModifyVectors:
    text = check_prompt(modify)
    w = check_weight(weight)
    vectors = prompt_vectors(space, [text, NEUTRAL_PROMPT], device)
    return ModifyVectors(vectors[0], vectors[1], w)


# ---------------------------------------------------------------- stored prompts


@dataclass(frozen=True)
class StoredPrompt:
    space: str
    prompt: str
    created_at: Any


def store_prompts(
    conn: Connection, space: Space, prompts: Sequence[str], device: str | None = None
) -> list[StoredPrompt]:
    """Embed ``prompts`` (and the neutral prompt) with the space's text tower and store
    them, so ``casebase.similar_cases_modified`` can use them; a stored prompt is
    replaced (same model, same vector: a re-run changes nothing that matters)."""
    from pgvector import Vector

    texts = list(dict.fromkeys([*(check_prompt(p) for p in prompts), NEUTRAL_PROMPT]))
    vectors = prompt_vectors(space, texts, device)
    with conn.transaction():
        for text, vec in zip(texts, vectors, strict=True):
            conn.execute(
                "INSERT INTO casebase.prompt_embedding (space_id, prompt, vec) "
                "VALUES (%s, %s, %s) ON CONFLICT (space_id, prompt) "
                "DO UPDATE SET vec = excluded.vec, created_at = now()",
                (space.space_id, text, Vector(np.asarray(vec, np.float32))),
            )
    log.info("space %s: stored %d prompts", space.name, len(texts))
    return [p for p in list_prompts(conn, space.name) if p.prompt in texts]


def list_prompts(conn: Connection, space: str | None = None) -> list[StoredPrompt]:
    """The stored prompts (of one space, or all), by space and prompt."""
    rows = conn.execute(
        "SELECT space, prompt, created_at FROM casebase.prompts "
        "WHERE %(space)s::text IS NULL OR space = %(space)s ORDER BY space, prompt",
        {"space": space},
    ).fetchall()
    return [StoredPrompt(*r) for r in rows]
