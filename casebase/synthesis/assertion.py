"""Assertion status of finding mentions: negation, uncertainty, resolution, requests.

A NegEx/ConText-style engine. The cues are data (``cues.yaml``, loaded by
:mod:`casebase.synthesis.cues`); each has a *kind*, which sets the status of a mention in
its scope, and a *direction*, which side of the cue its scope lies on:

    kind               status          examples
    negation           absent          "no", "without", "denies", "is not seen", ": none"
    resolved           absent          "has resolved", "interval resolution of", "no longer"
    hedge              uncertain       "possible", "questionable", "borderline"
    request            hypothetical    "evaluate for", "rule out", "?pneumonia"
    change, pseudo     present         "no increase in", "partially resolved", "no change in"
    link               transparent     "no opacity TO SUGGEST pneumonia"

"hypothetical" means the sentence asks or recommends: it asserts nothing about this study,
and the extractor drops such mentions.

The engine works on a sentence's words with whitespace tokens left out, so runs of spaces
and line breaks never break a cue or a scope. Forward scopes run from the cue to the end
of the sentence, stopped by terminations ("but", "however", ";", "positive for") and by a
list separator that starts another clause ("no effusion, there is …", "no effusion,
stable cardiomegaly"); a negated list ("no effusion, pneumothorax or consolidation")
negates every item. Backward scopes run from the cue to the start of its clause: they
skip the cue's own copula ("effusion IS not seen"), cross one comma when the cue ends its
clause ("pneumothorax, resolved."), and stop at a termination, at a copula that starts
another clause ("the heart is enlarged and the effusion has resolved"), at another cue,
and at a bare comma unless the words before the cue form an and/or list ("effusion,
pneumothorax or consolidation is not seen"). When several cues cover a mention the
nearest wins, so "no pneumothorax, possible small effusion" yields an uncertain effusion,
except that change language ("decreased", "resolving") yields to a hedge or request.

Overlapping cues reduce to the longest ("no change in" over "no"). A cue that overlaps the
mention gives way to its own parts outside the mention ("no ACUTE fracture": the cue
"no acute" yields "no", it does not swallow the finding's first word). A cue wholly
inside the finding phrase belongs to the phrase and is ignored, except a hedge
("BORDERLINE enlarged heart" is uncertain).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from casebase.imaging.vocabulary import Status
from casebase.synthesis.cues import BACKWARD, BOTH, FORWARD, CueMatch, CueSet, load_cues
from casebase.synthesis.sentences import get_nlp, token_words

PRESENT, UNCERTAIN, ABSENT = Status.PRESENT.value, Status.UNCERTAIN.value, Status.ABSENT.value
# Internal only, never stored: a request or question ("rule out X") asserts nothing.
HYPOTHETICAL = "hypothetical"

_KIND_STATUS = {
    "negation": ABSENT,
    "resolved": ABSENT,
    "hedge": UNCERTAIN,
    "differential": UNCERTAIN,
    "request": HYPOTHETICAL,
    "change": PRESENT,
    "pseudo": PRESENT,
    "link": PRESENT,
}
_CLAUSE_END = {".", ",", ";", ":", ")", "!", "?"}


@dataclass(frozen=True)
class Cue:
    """One cue in a sentence, in word indices of the sentence (whitespace left out)."""

    kind: str
    direction: str
    start: int
    end: int
    text: str

    @property
    def status(self) -> str:
        return _KIND_STATUS[self.kind]


@dataclass(frozen=True)
class Assertion:
    """The status of one mention and the cue that decided it (None: default present)."""

    status: str
    cue: str | None


def _longest(matches: Sequence[CueMatch], words: Sequence[str]) -> list[CueMatch]:
    """Overlapping matches reduced to the longest, then the one that does not start with
    a label's punctuation, then the first: in "IMPRESSION: negative for effusion" the
    forward "negative for" beats the label cue ": negative" ("Effusion: negative.")."""
    taken: set[int] = set()
    out: list[CueMatch] = []
    labels = (":", "-")
    for m in sorted(matches, key=lambda m: (m.start - m.end, words[m.start] in labels, m.start)):
        if taken.isdisjoint(range(m.start, m.end)):
            taken.update(range(m.start, m.end))
            out.append(m)
    return sorted(out, key=lambda m: m.start)


class Sentence:
    """One sentence's words, its cues and their scopes, computed once for all mentions."""

    def __init__(self, words: Sequence[str], cues: CueSet | None = None) -> None:
        self.words = list(words)
        self.cs = cues or load_cues()
        self._raw = self.cs.find(self.words)
        self.cues = [self._cue(m) for m in _longest(self._raw, self.words)]
        self._terms = self.cs.termination_starts(self.words) if self.cues else set()
        self._cue_words = {i for c in self.cues if c.kind != "link" for i in range(c.start, c.end)}
        self._scopes: dict[Cue, tuple[int, int]] = {}

    def _cue(self, m: CueMatch) -> Cue:
        return Cue(m.kind, m.direction, m.start, m.end, " ".join(self.words[m.start : m.end]))

    def _next_word(self, i: int) -> str | None:
        """The word after i that is not a de-identification token (XXXX)."""
        j = i + 1
        while j < len(self.words) and self.words[j] == "xxxx":
            j += 1
        return self.words[j] if j < len(self.words) else None

    def _forward_end(self, cue: Cue) -> int:
        c = self.cs.clauses
        narrow = cue.kind in self.cs.phrase_scope
        for i in range(cue.end, len(self.words)):
            if i in self._terms:
                return i
            if narrow and (self.words[i] in c["list_words"] or self.words[i] in c["list_breaks"]):
                return i
            if self.words[i] in c["list_breaks"]:
                nxt = self._next_word(i)
                if nxt in c["clause_starters"] or nxt in c["presence_starters"]:
                    return i
        return len(self.words)

    def _backward_start(self, cue: Cue) -> int:
        c, words = self.cs.clauses, self.words
        i = cue.start - 1
        while i >= 0 and (words[i] in c["copulas"] or words[i] in c["copula_adverbs"]):
            i -= 1  # the cue's own copula is not a clause break
        clause_final = cue.end >= len(words) or words[cue.end] in _CLAUSE_END
        # A clause-final cue comments on the whole clause before its comma ("pneumothorax,
        # resolved."; "the heart is enlarged, likely exaggerated by technique."), copula
        # and all.
        crossed = i >= 0 and words[i] == "," and clause_final
        if crossed:
            i -= 1
        seen_list_word = False
        while i >= 0:
            word = words[i]
            copula = word in c["copulas"] and not crossed
            if i in self._terms or copula or word == "there" or i in self._cue_words:
                return i + 1
            if word in c["list_words"]:
                seen_list_word = True
            elif word == "," and not seen_list_word:
                return i + 1
            i -= 1
        return 0

    def _scope(self, cue: Cue) -> tuple[int, int]:
        scope = self._scopes.get(cue)
        if scope is None:
            scope = self._scopes[cue] = (self._backward_start(cue), self._forward_end(cue))
        return scope

    def _outside(self, cue: Cue, start: int, end: int) -> list[Cue]:
        """The longest cues within ``cue`` that do not overlap the mention [start, end)."""
        parts = [
            m
            for m in self._raw
            if cue.start <= m.start
            and m.end <= cue.end
            and (m.end <= start or m.start >= end)
            and m.kind != "link"
        ]
        return [self._cue(m) for m in _longest(parts, self.words)]

    def _adjacent(self, end: int, cue: Cue) -> bool:
        """Only the cue's copula (or XXXX) lies between a mention ending at ``end`` and it."""
        c = self.cs.clauses
        return all(
            w in c["copulas"] or w in c["copula_adverbs"] or w == "xxxx"
            for w in self.words[end : cue.start]
        )

    def _distance(self, cue: Cue, start: int, end: int) -> int | None:
        back_start, fwd_end = self._scope(cue)
        if cue.direction in (FORWARD, BOTH) and cue.end <= start < fwd_end:
            return start - cue.end
        in_backward = cue.direction in (BACKWARD, BOTH) and back_start <= start and end <= cue.start
        if in_backward and (cue.kind not in self.cs.phrase_scope or self._adjacent(end, cue)):
            return cue.start - end
        return None

    def assert_mention(self, start: int, end: int) -> Assertion:
        """Status of the mention spanning words [start, end) of the sentence."""
        covering: list[tuple[int, Cue]] = []
        for cue in self.cues:
            if cue.kind == "link":
                continue
            candidates: list[tuple[int | None, Cue]]
            if start <= cue.start and cue.end <= end:
                candidates = [(0, cue)] if cue.kind == "hedge" else []
            elif cue.start < end and start < cue.end:
                parts = self._outside(cue, start, end)
                candidates = [(self._distance(c, start, end), c) for c in parts]
            else:
                candidates = [(self._distance(cue, start, end), cue)]
            covering.extend((d, c) for d, c in candidates if d is not None)
        if not covering:
            return Assertion(PRESENT, None)
        # The nearest cue wins (the first of equals), except that change language says how
        # a finding changes, not whether it is there: a hedge or request over it still
        # counts ("could be developing or RESOLVING pneumonia" is uncertain).
        best = min(covering, key=lambda dc: dc[0])[1]
        if best.kind == "change":
            doubts = [(d, c) for d, c in covering if c.status in (UNCERTAIN, HYPOTHETICAL)]
            best = min(doubts, key=lambda dc: dc[0])[1] if doubts else best
        return Assertion(best.status, best.text)


def compact(words: Sequence[str], start: int, end: int) -> tuple[list[str], list[int]]:
    """The words of tokens [start, end) without whitespace tokens, and their token indices."""
    index = [i for i in range(start, end) if not words[i].isspace()]
    return [words[i] for i in index], index


def word_range(index: Sequence[int], tok_start: int, tok_end: int) -> tuple[int, int]:
    """Token range [tok_start, tok_end) as a word range of a :func:`compact` sentence."""
    return bisect.bisect_left(index, tok_start), bisect.bisect_left(index, tok_end)


def assert_span(text: str, start: int, end: int) -> Assertion:
    """Status of the characters [start, end) of ``text`` as a mention of *some* condition.

    The lexicon need not know the condition: this is how an external set that names its
    own targets (the NegEx test set) asks the rules about a span. Sections are not
    looked at: ``text`` is one sentence or passage, not a whole report.
    """
    doc = get_nlp()(text)
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None or not span.text.strip():
        raise ValueError(f"no word in characters {start}:{end} of the text")
    sent = span.sent
    words, index = compact(token_words(doc), sent.start, sent.end)
    w_start, w_end = word_range(index, span.start, min(span.end, sent.end))
    return Sentence(words).assert_mention(w_start, w_end)
