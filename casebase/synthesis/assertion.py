"""Assertion status of finding mentions: negation, uncertainty, resolution, pseudo-cues.

A small NegEx-style engine on a blank spaCy English pipeline (tokenizer + sentencizer,
no model download). Cues are token phrases found with a PhraseMatcher; each cue has a
*kind* (what it asserts) and a *direction* (which side of the cue its scope lies on):

    kind       effect on a mention in scope         examples
    negation   absent                               "no", "without", "is not seen"
    resolved   absent (it was there, now gone)      "has resolved", "removed"
    hedge      uncertain                            "possible", "cannot be excluded"
    pseudo     present (blocks the other cues)      "no change in", "not only"

Forward scopes run from the cue to the end of the sentence, stopped by terminations
("but", "however", "which", ";", ", there is", "and the"); a negated list
("no effusion, pneumothorax or consolidation") therefore negates every item. Backward
scopes run from the cue to the start of its clause: they stop at a termination, at a
copula that starts another clause ("the heart is enlarged and the effusion has
resolved"), and at a bare comma unless the words before the cue form an and/or list
("effusion, pneumothorax or consolidation is not seen"). When several cues cover a
mention the nearest one wins, so "no pneumothorax, possible small effusion" yields an
uncertain effusion. Cues that fall inside a matched finding phrase are ignored.

The cue vocabulary lives here rather than in the lexicon because it is about the
grammar of reports, not about which findings exist.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import spacy
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc

PRESENT, UNCERTAIN, ABSENT = "present", "uncertain", "absent"

FORWARD, BACKWARD, BOTH = "forward", "backward", "both"

_KIND_STATUS = {
    "negation": ABSENT,
    "resolved": ABSENT,
    "hedge": UNCERTAIN,
    "pseudo": PRESENT,
    "link": PRESENT,
}

# (kind, direction) -> phrases. Longer phrases win over their sub-phrases ("no change in"
# over "no"), because overlapping cue matches are reduced to the longest one.
CUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("negation", FORWARD): (
        "no",
        "not",
        "without",
        "nor",
        "neither",
        "negative for",
        "free of",
        "clear of",
        "absence of",
        "no evidence of",
        "no evidence for",
        "no evidence to suggest",
        "no findings of",
        "no findings to suggest",
        "no findings suggestive of",
        "no sign of",
        "no signs of",
        "no definite",
        "no definitive",
        "no obvious",
        "no convincing",
        "no new",
        "no radiographic evidence of",
        "no visible",
        "no evidence",
        "rather than",
        "never",
        "not demonstrate",
        "does not demonstrate",
        "not identify",
        "there is no",
        "there are no",
        "no longer any",
        "no residual",
        "no focal",
        "no suspicious",
        "no acute",
        "no significant",
    ),
    ("negation", BACKWARD): (
        "not seen",
        "not identified",
        "not visualized",
        "not visible",
        "not demonstrated",
        "not present",
        "not evident",
        "not appreciated",
        "not detected",
        "not noted",
        "not apparent",
        "not definitely seen",
        "not clearly seen",
        "not well seen",
        "not well - seen",
        "not definitely identified",
        "not well visualized",
        "is absent",
        "are absent",
        "absent",
        "is excluded",
        "are excluded",
        "has been excluded",
        "is ruled out",
        "has been ruled out",
        "not enlarged",
    ),
    ("resolved", FORWARD): (
        "resolution of",
        "interval resolution of",
        "removal of",
        "interval removal of",
        "clearing of",
        "interval clearing of",
        "resolved",
    ),
    ("resolved", BACKWARD): (
        "has resolved",
        "have resolved",
        "resolved",
        "has cleared",
        "have cleared",
        "cleared",
        "removed",
        "has been removed",
        "have been removed",
        "was removed",
        "were removed",
        "no longer seen",
        "no longer visualized",
        "no longer visible",
        "no longer present",
        "no longer identified",
        "no longer evident",
        "no longer demonstrated",
        "no longer apparent",
        "is gone",
        "are gone",
        "has disappeared",
        "have disappeared",
        "has been discontinued",
    ),
    ("hedge", FORWARD): (
        "possible",
        "possibly",
        "probable",
        "probably",
        "likely",
        "most likely",
        "may",
        "may represent",
        "may reflect",
        "may be",
        "may indicate",
        "may be due to",
        "might",
        "might represent",
        "could",
        "could represent",
        "could reflect",
        "could be",
        "suggestive of",
        "suggests",
        "suggest",
        "suggesting",
        "concerning for",
        "concern for",
        "worrisome for",
        "suspicious for",
        "suspicion for",
        "suspicion of",
        "suspected",
        "suspect",
        "question of",
        "questionable",
        "questionably",
        "differential includes",
        "differential diagnosis includes",
        "differential considerations include",
        "differential diagnosis",
        "differential",
        "cannot exclude",
        "can not exclude",
        "ca n't exclude",
        "cannot rule out",
        "can not rule out",
        "ca n't rule out",
        "could not exclude",
        "not exclude",
        "difficult to exclude",
        "cannot entirely exclude",
        "cannot completely exclude",
        "rule out",
        "r / o",
        "evaluate for",
        "equivocal",
        "indeterminate",
        "presumed",
        "presumably",
        "consider",
        "considered",
        "favor",
        "favored",
        "versus",
        "vs",
        "vs.",
        "or possibly",
        "raising the possibility of",
        "possibility of",
        "compatible with possible",
        "borderline versus",
        "uncertain",
        "potentially",
        "perhaps",
        "question",
        "questioned",
        "rule - out",
        "r / o",
        "difficult to completely exclude",
        "difficult to entirely exclude",
        "favoring",
        "correlate clinically for",
        "clinical correlation for",
        "for evaluation of",
        "to evaluate for",
    ),
    ("hedge", BACKWARD): (
        "cannot be excluded",
        "can not be excluded",
        "ca n't be excluded",
        "not excluded",
        "is not excluded",
        "not entirely excluded",
        "cannot be entirely excluded",
        "cannot be completely excluded",
        "cannot be ruled out",
        "can not be ruled out",
        "not ruled out",
        "is possible",
        "are possible",
        "is suspected",
        "are suspected",
        "is questioned",
        "is questionable",
        "is likely",
        "are likely",
        "is not entirely excluded",
        "is a consideration",
        "are considerations",
        "is also possible",
        "also possible",
        "versus",
        "vs",
        "vs.",
        "is favored",
        "could be present",
        "may be present",
        "is uncertain",
        "not excluded",
        "may not be demonstrated",
        "may not be seen",
        "may not be visible",
        "may not be apparent",
        "may not be detected",
        "may be missed",
        "would be a consideration",
        "is in the differential",
        "in the differential",
        "would be considered",
        "is a possibility",
        "are a possibility",
        "remains a possibility",
        "is not excluded by this exam",
    ),
    ("pseudo", FORWARD): (
        "no change",
        "no change in",
        "no significant change",
        "no interval change",
        "no significant interval change",
        "no appreciable change",
        "no definite change",
        "no increase",
        "no increase in",
        "no significant increase",
        "no decrease",
        "no worsening",
        "no progression",
        "not significantly changed",
        "without change",
        "without significant change",
        "without interval change",
        "without significant interval change",
        "without appreciable change",
        "no significant interval change in",
        "without definite change",
        "not only",
        "gram negative",
    ),
    # Transparent links: they contain a cue word but assert nothing themselves, so a
    # negation before them reaches through ("no opacity to suggest pneumonia").
    ("link", FORWARD): (
        "to suggest",
        "to indicate",
        "to represent",
        "that would suggest",
        "which would suggest",
        "to explain",
    ),
}

# Cues that only look backward across a comma when the comma is part of a list.
_LIST_WORDS = {"or", "and", "nor", "/"}

TERMINATIONS = {
    "but",
    "however",
    "although",
    "though",
    "which",
    "whereas",
    "while",
    "yet",
    "except",
    "aside",
    "apart",
    "nevertheless",
    "nonetheless",
    "otherwise",
    "that",
    "who",
    "where",
    "since",
    "because",
}
_TERMINATION_PUNCT = {";", ":", "(", ")"}
# Separators after which a new clause may start (see _CLAUSE_STARTERS).
_LIST_BREAKS = {",", "and", "with"}
# After "," or "and", these words start a new clause ("no effusion, there is ...").
_CLAUSE_STARTERS = {"the", "there", "this", "these", "it", "a", "an", "his", "her"}
# Presence words that break a forward negation after a list separator
# ("no effusion, stable cardiomegaly").
_PRESENCE_STARTERS = {
    "stable",
    "mild",
    "mildly",
    "moderate",
    "moderately",
    "persistent",
    "again",
    "redemonstrated",
    "unchanged",
    "severe",
    "marked",
    "chronic",
    "old",
    "healed",
    "new",
    "increased",
    "increasing",
    "decreased",
    "improved",
    "improving",
    "minimal",
    "postoperative",
    "post",
    "status",
}
_COPULA_ADVERBS = {"also", "now", "still", "again", "been", "be", "being", "definitely"}
COPULAS = {
    "is",
    "are",
    "was",
    "were",
    "has",
    "have",
    "had",
    "appears",
    "appear",
    "remains",
    "remain",
    "demonstrates",
    "shows",
    "show",
    "noted",
    "seen",
}


@dataclass(frozen=True)
class Cue:
    """One cue occurrence in a sentence, in token indices of the Doc."""

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


@Language.component("casebase_newline_sentences")
def _newline_sentences(doc: Doc) -> Doc:
    """Start a sentence after a line break or a run of stops ("effusion.. Minimal").

    Report sections and list items are sentences; the sentencizer alone misses both.
    Works on the ORTH array so that a megabyte report creates no Token objects here.
    """
    strings = doc.vocab.strings
    breaks: dict[int, bool] = {}
    orths = doc.to_array("ORTH")
    for i in range(len(orths) - 1):
        h = int(orths[i])
        is_break = breaks.get(h)
        if is_break is None:
            text = strings[h]
            is_break = ("\n" in text and text.isspace()) or (
                len(text) > 1 and not text.strip(".!?")
            )
            breaks[h] = is_break
        if is_break:
            doc[i + 1].is_sent_start = True
    return doc


def token_words(doc: Doc) -> list[str]:
    """Lower-cased text of every token, read through the LOWER array (fast)."""
    strings = doc.vocab.strings
    cache: dict[int, str] = {}
    words: list[str] = []
    for h in doc.to_array("LOWER").tolist():
        word = cache.get(h)
        if word is None:
            word = cache[h] = strings[h]
        words.append(word)
    return words


@functools.lru_cache(maxsize=1)
def get_nlp() -> Language:
    """The blank English pipeline (built once): tokenizer, sentencizer, newline rule."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("casebase_newline_sentences")
    nlp.max_length = 2_000_000
    return nlp


@functools.lru_cache(maxsize=1)
def _cue_matcher() -> tuple[PhraseMatcher, dict[int, tuple[str, str]]]:
    nlp = get_nlp()
    matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    keys: dict[int, tuple[str, str]] = {}
    for (kind, direction), phrases in CUES.items():
        name = f"{kind}:{direction}"
        matcher.add(name, list(nlp.tokenizer.pipe(phrases)))
        keys[nlp.vocab.strings[name]] = (kind, direction)
    return matcher, keys


def find_cues(doc: Doc) -> list[Cue]:
    """All cues in a Doc; overlapping matches reduced to the longest (then the first).

    A phrase listed under two directions (e.g. "versus", "resolved") becomes one cue
    with direction BOTH so that it can scope either way.
    """
    matcher, keys = _cue_matcher()
    raw = matcher(doc)
    by_span: dict[tuple[int, int], set[tuple[str, str]]] = {}
    for match_id, start, end in raw:
        by_span.setdefault((start, end), set()).add(keys[match_id])
    spans = sorted(by_span, key=lambda se: (-(se[1] - se[0]), se[0]))
    taken = [False] * len(doc)
    cues: list[Cue] = []
    for start, end in spans:
        if any(taken[start:end]):
            continue
        for i in range(start, end):
            taken[i] = True
        kinds = by_span[(start, end)]
        kind_names = {k for k, _ in kinds}
        # One kind per span; if both directions are listed it scopes both ways.
        kind = sorted(kind_names)[0]
        directions = {d for k, d in kinds if k == kind}
        direction = directions.pop() if len(directions) == 1 else BOTH
        cues.append(Cue(kind, direction, start, end, doc[start:end].text))
    cues.sort(key=lambda c: c.start)
    return cues


def _is_termination(word: str) -> bool:
    return word in TERMINATIONS or word in _TERMINATION_PUNCT


def _next_word(words: Sequence[str], i: int, limit: int) -> str | None:
    """The next token after i (before limit) that is neither whitespace nor XXXX."""
    j = i + 1
    while j < limit and (words[j].isspace() or words[j] == "xxxx"):
        j += 1
    return words[j] if j < limit else None


def forward_scope_end(words: Sequence[str], sent_end: int, cue: Cue) -> int:
    """Token index (exclusive) where the forward scope of a cue ends."""
    for i in range(cue.end, sent_end):
        word = words[i]
        if _is_termination(word):
            return i
        if word in _LIST_BREAKS:
            nxt = _next_word(words, i, sent_end)
            if nxt is not None and (nxt in _CLAUSE_STARTERS or nxt in _PRESENCE_STARTERS):
                return i
    return sent_end


def backward_scope_start(
    words: Sequence[str], sent_start: int, cue: Cue, cue_tokens: frozenset[int] = frozenset()
) -> int:
    """Token index (inclusive) where the backward scope of a cue starts.

    ``cue_tokens`` are the token indices of the sentence's other cues: a backward scope
    stops at another cue ("opacity may represent atelectasis versus pneumonia" leaves
    the opacity outside the scope of "versus").
    """
    seen_list_word = False
    adjacent = True  # the cue's own copula ("effusion IS not seen") is not a clause break
    for i in range(cue.start - 1, sent_start - 1, -1):
        word = words[i]
        if adjacent and (word in COPULAS or word in _COPULA_ADVERBS):
            continue
        adjacent = False
        if _is_termination(word) or word in COPULAS or word == "there" or i in cue_tokens:
            return i + 1
        if word in _LIST_WORDS:
            seen_list_word = True
        elif word == "," and not seen_list_word:
            return i + 1
    return sent_start


def assert_mention(
    words: Sequence[str],
    sent_start: int,
    sent_end: int,
    start: int,
    end: int,
    cues: list[Cue],
    scopes: dict[Cue, tuple[int, int]] | None = None,
) -> Assertion:
    """Status of the mention spanning tokens [start, end) of the sentence.

    ``words`` are the lower-cased token texts of the Doc; ``cues`` the cues of the
    sentence [sent_start, sent_end); ``scopes`` optionally caches each cue's
    (backward start, forward end) so a sentence with many mentions is scoped once.
    """
    best: tuple[int, Cue] | None = None
    cue_tokens = frozenset(i for c in cues if c.kind != "link" for i in range(c.start, c.end))
    for cue in cues:
        if cue.kind == "link" or (cue.start < end and cue.end > start):
            continue  # a cue inside the finding phrase belongs to the phrase
        if scopes is not None and cue in scopes:
            back_start, fwd_end = scopes[cue]
        else:
            back_start = backward_scope_start(words, sent_start, cue, cue_tokens)
            fwd_end = forward_scope_end(words, sent_end, cue)
            if scopes is not None:
                scopes[cue] = (back_start, fwd_end)
        distance: int | None = None
        if cue.direction in (FORWARD, BOTH) and cue.end <= start < fwd_end:
            distance = start - cue.end
        elif cue.direction in (BACKWARD, BOTH) and back_start <= start and end <= cue.start:
            distance = cue.start - end
        if distance is not None and (best is None or distance < best[0]):
            best = (distance, cue)
    if best is None:
        return Assertion(PRESENT, None)
    cue = best[1]
    return Assertion(cue.status, cue.text.lower())


def assert_span(text: str, start: int, end: int) -> Assertion:
    """Status of the characters [start, end) of ``text`` as a mention of *some* condition.

    The lexicon need not know the condition: this is how an external set that names its
    own targets (the NegEx test set) asks the rules about a span.
    """
    doc = get_nlp()(text)
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None or len(span) == 0:
        raise ValueError(f"no token in characters {start}:{end} of the text")
    sent = span.sent
    cues = [c for c in find_cues(doc) if sent.start <= c.start < sent.end]
    return assert_mention(
        token_words(doc), sent.start, sent.end, span.start, min(span.end, sent.end), cues
    )
