"""Rule-based findings extraction: lexicon matches + assertion status + location.

``extract(text)`` returns one :class:`Mention` per matched finding phrase, with its
status (present / uncertain / absent), the cue that decided it, and the side and zone
stated next to it. ``label_report(text)`` rolls the mentions up to one status per
finding for the whole report (present > uncertain > absent; device kinds also roll up
into their parent ``support_devices``) and derives ``no_finding``: a report that
mentions something but asserts no abnormal finding is a normal study, whatever words
it used to say so.

Only what the report asserts about this study counts. A whole report's sections are
found by :mod:`casebase.synthesis.sections` (the sanitiser's finder): mentions in the
indication, history, comparison or technique assert nothing, and neither do requests
("evaluate for pneumonia", "?pneumothorax"), which the assertion rules call
hypothetical. Two findings offered as alternatives ("atelectasis or scarring") are both
uncertain.

Nothing is invented: a report with no lexicon phrase yields no mention and an empty
label dict (empty text, junk, foreign-language text, "XXXX" de-identification tokens).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from casebase.synthesis.assertion import (
    ABSENT,
    HYPOTHETICAL,
    PRESENT,
    UNCERTAIN,
    Sentence,
    compact,
    word_range,
)
from casebase.synthesis.cues import STRICT, CueSet, load_cues
from casebase.synthesis.lexicon import Lexicon, load_lexicon
from casebase.synthesis.location import location
from casebase.synthesis.sections import reporting_spans
from casebase.synthesis.sentences import get_nlp, token_words

if TYPE_CHECKING:
    from spacy.tokens import Doc

logger = logging.getLogger(__name__)

# Bump when the lexicon, the cues or the rules change: it is stored with every extracted
# finding so that `casebase relabel` replaces rows produced by an older labeller
# (tests/test_labeller_version.py holds the data digests of each version).
LABELLER_VERSION = "rules-2.2"
BACKEND = "rules"


def labeller_version(convention: str = STRICT) -> str:
    """What a finding row records: the labeller's version, and the coding convention
    (``conventions.yaml``) when it is not the strict reading."""
    return LABELLER_VERSION if convention == STRICT else f"{LABELLER_VERSION}+{convention}"


NO_FINDING = "no_finding"
STATUS_RANK = {ABSENT: 1, UNCERTAIN: 2, PRESENT: 3}

# Long texts are processed in chunks cut at line or sentence ends, which keeps spaCy's
# memory bounded and its max_length irrelevant.
CHUNK_CHARS = 100_000


@dataclass(frozen=True)
class Mention:
    """One finding phrase in a report and its assertion status.

    ``start``/``end`` are character offsets of the matched phrase in the input text;
    ``cue`` is the (lower-cased) cue phrase that set the status, None when the status is
    the default (present) or fixed by a normal statement; ``location`` holds "side"
    and/or "zone" only where the report states them.
    """

    finding: str
    status: str
    sentence: str
    start: int
    end: int
    cue: str | None
    location: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class _Candidate:
    finding: str
    start: int
    end: int
    normal: bool


def finding_ids() -> list[str]:
    """All finding ids of the packaged lexicon, in lexicon order."""
    return load_lexicon().ids()


def _chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[tuple[int, str]]:
    """Yield (offset, piece) with pieces ending at a line or sentence end where possible."""
    start = 0
    n = len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            cut = max(text.rfind("\n", start, end), text.rfind(". ", start, end))
            if cut > start + size // 2:
                end = cut + 1
        yield start, text[start:end]
        start = end


def _clashes(a: _Candidate, b: _Candidate) -> bool:
    """Whether two overlapping matches compete (only one of them can be kept)."""
    if not (a.start < b.end and b.start < a.end):
        return False
    if a.finding == b.finding:
        return True
    if a.normal and b.normal:
        return False
    return not (a.start == b.start and a.end == b.end)


def _overlaps_any(start: int, end: int, spans: list[tuple[int, int]], longest: int) -> bool:
    """Whether [start, end) overlaps one of ``spans`` (sorted by start, none longer
    than ``longest``); a bisect keeps this logarithmic on megabyte inputs."""
    i = bisect.bisect_left(spans, (start - longest, -1))
    while i < len(spans) and spans[i][0] < end:
        if spans[i][1] > start:
            return True
        i += 1
    return False


def _candidates(text: str, lexicon: Lexicon) -> list[_Candidate]:
    """Lexicon matches with overlaps resolved: the longest phrase wins.

    A phrase listed under two findings ("masslike opacity") asserts both, so identical
    spans of different findings are all kept. Normal statements may overlap each other
    ("heart and vasculature are normal" is a statement about two findings). Matches
    overlapping one of the entry's ``exclude`` phrases ("bone density") are dropped.
    """
    found: list[_Candidate] = []
    for finding in lexicon.findings:
        if finding.regex is not None:
            excluded = (
                sorted((m.start(), m.end()) for m in finding.exclude_regex.finditer(text))
                if finding.exclude_regex is not None
                else []
            )
            longest = max((e - s for s, e in excluded), default=0)
            found.extend(
                _Candidate(finding.id, m.start(), m.end(), False)
                for m in finding.regex.finditer(text)
                if not (excluded and _overlaps_any(m.start(), m.end(), excluded, longest))
            )
        if finding.normal_regex is not None:
            found.extend(
                _Candidate(finding.id, m.start(), m.end(), True)
                for m in finding.normal_regex.finditer(text)
            )
    if not found:
        return []
    found.sort(key=lambda c: (-(c.end - c.start), c.start))
    longest = found[0].end - found[0].start
    accepted: list[_Candidate] = []
    starts: list[tuple[int, int]] = []  # (start, index into accepted), kept sorted
    for cand in found:
        i = bisect.bisect_left(starts, (cand.start - longest, -1))
        clash = False
        while i < len(starts) and starts[i][0] < cand.end:
            if _clashes(cand, accepted[starts[i][1]]):
                clash = True
                break
            i += 1
        if not clash:
            bisect.insort(starts, (cand.start, len(accepted)))
            accepted.append(cand)
    accepted.sort(key=lambda c: (c.start, c.finding))
    return accepted


def _lower_same_length(text: str) -> str:
    """Lower-case text without changing its length (offsets must stay valid)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _extract_doc(doc: Doc, offset: int, lexicon: Lexicon, cues: CueSet) -> list[Mention]:
    text = doc.text  # a property that re-joins all tokens: read it once
    candidates = _candidates(_lower_same_length(text), lexicon)
    if not candidates:
        return []
    words = token_words(doc)
    sent_bounds = [(s.start, s.end) for s in doc.sents]
    sent_starts = [b[0] for b in sent_bounds]
    token_starts = doc.to_array("IDX").tolist()
    sentences: dict[int, tuple[Sentence, list[int]]] = {}
    mentions: list[Mention] = []
    places: list[tuple[int, int, int] | None] = []  # (sentence, first token, end token)
    for cand in candidates:
        # Tokens touching [cand.start, cand.end): the "expand" alignment of char_span.
        tok_start = max(bisect.bisect_right(token_starts, cand.start) - 1, 0)
        tok_end = bisect.bisect_left(token_starts, cand.end)
        if tok_end <= tok_start:
            continue
        idx = bisect.bisect_right(sent_starts, tok_start) - 1
        sent_start, sent_end = sent_bounds[idx]
        tok_end = min(tok_end, sent_end)
        entry = lexicon.by_id[cand.finding]
        places.append(None if cand.normal else (idx, tok_start, tok_end))
        if cand.normal:
            status, cue_text = entry.normal_status, None
        else:
            if idx not in sentences:
                sent_words, index = compact(words, sent_start, sent_end)
                sentences[idx] = (Sentence(sent_words, cues), index)
            sentence, index = sentences[idx]
            result = sentence.assert_mention(*word_range(index, tok_start, tok_end))
            status, cue_text = result.status, result.cue
        first = token_starts[sent_start]
        last_end = token_starts[sent_end] if sent_end < len(token_starts) else len(text)
        mentions.append(
            Mention(
                finding=cand.finding,
                status=status,
                sentence=text[first:last_end].strip(),
                start=offset + cand.start,
                end=offset + cand.end,
                cue=cue_text,
                location=location(words, sent_start, sent_end, tok_start, tok_end),
            )
        )
    return _differentials(mentions, places, words, cues)


def _differentials(
    mentions: list[Mention],
    places: list[tuple[int, int, int] | None],
    words: Sequence[str],
    cues: CueSet,
) -> list[Mention]:
    """Two findings offered as alternatives ("atelectasis or scarring") are both uncertain.

    Only where no cue decided either of them: "no effusion or pneumothorax" stays a
    negated list. Mentions of one span (a phrase of two findings) move together.
    """
    alternatives = cues.alternatives
    groups: list[tuple[tuple[int, int, int], list[int]]] = []
    for i, place in enumerate(places):
        if place is None:
            continue
        if groups and groups[-1][0] == place:
            groups[-1][1].append(i)
        else:
            groups.append((place, [i]))
    out = list(mentions)
    for (a, a_members), (b, b_members) in itertools.pairwise(groups):
        if a[0] != b[0] or b[1] < a[2]:
            continue  # another sentence, or overlapping spans
        between = [w for w in compact(words, a[2], b[1])[0] if w != ","]
        members = a_members + b_members
        if tuple(between) in alternatives and all(
            mentions[i].status == PRESENT and mentions[i].cue is None for i in members
        ):
            for i in members:
                out[i] = replace(out[i], status=UNCERTAIN, cue=" ".join(between))
    return out


_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _worth_parsing(text: str) -> bool:
    """Skip texts with no Latin-script word at all (empty, junk, non-Latin scripts)."""
    return bool(text) and _WORD_RE.search(text) is not None


def extract(text: str, *, convention: str = STRICT) -> list[Mention]:
    """All finding mentions in a report text, in order of appearance."""
    return next(iter(extract_many([text], convention=convention)))


def extract_many(
    texts: Iterable[str],
    *,
    batch_size: int = 256,
    cues: CueSet | None = None,
    convention: str = STRICT,
) -> Iterator[list[Mention]]:
    """Mentions for each text, in order; faster than ``extract`` in a loop.

    ``convention`` reads the packaged cues as a site's coders code (``conventions.yaml``;
    ``strict``: as written); ``cues`` replaces them (``load_cues(path)``), e.g. to score
    an edited cue file in a benchmark.

    Only mentions that assert something about this study are returned: none from a
    section that does not report on it (indication, history, comparison …: see
    :mod:`casebase.synthesis.sections`), none that a request or a question governs
    ("evaluate for pneumonia", "?pneumonia").
    """
    lexicon = load_lexicon()
    cue_set = cues or load_cues(convention=convention)
    nlp = get_nlp()
    pending: list[tuple[int, int, str]] = []  # (text index, offset, piece)
    results: list[list[Mention]] = []
    spans: dict[int, list[tuple[int, int]]] = {}
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"report text must be str, got {type(text).__name__}")
        results.append([])
        if not _worth_parsing(text):
            continue
        # Lone surrogates (undecodable bytes) crash spaCy; U+FFFD keeps offsets intact.
        text = _SURROGATE_RE.sub("\ufffd", text)
        spans[index] = reporting_spans(text)
        pending.extend((index, offset, piece) for offset, piece in _chunks(text))
    docs = nlp.pipe((piece for _, _, piece in pending), batch_size=batch_size)
    for (index, offset, _), doc in zip(pending, docs, strict=True):
        results[index].extend(
            m
            for m in _extract_doc(doc, offset, lexicon, cue_set)
            if m.status != HYPOTHETICAL and _within(m.start, spans[index])
        )
    logger.debug("extracted mentions from %d texts (%d pieces)", len(results), len(pending))
    return iter(results)


def _within(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= pos < end for start, end in spans)


def rollup(mentions: Iterable[Mention], lexicon: Lexicon | None = None) -> dict[str, str]:
    """Report-level status per finding from its mentions (see module docstring)."""
    lex = lexicon or load_lexicon()
    labels: dict[str, str] = {}
    any_mention = False

    def merge(finding: str, status: str) -> None:
        if STATUS_RANK[status] > STATUS_RANK.get(labels.get(finding, ""), 0):
            labels[finding] = status

    for m in mentions:
        any_mention = True
        if m.finding == NO_FINDING:
            continue
        merge(m.finding, m.status)
        for parent in lex.ancestors(m.finding):
            merge(parent, m.status)
    if any_mention:
        worst = max(
            (STATUS_RANK[s] for f, s in labels.items() if lex.by_id[f].blocks_no_finding),
            default=0,
        )
        labels[NO_FINDING] = (
            ABSENT
            if worst == STATUS_RANK[PRESENT]
            else UNCERTAIN
            if worst == STATUS_RANK[UNCERTAIN]
            else PRESENT
        )
    return labels


def label_report(text: str, *, convention: str = STRICT) -> dict[str, str]:
    """Report-level status for each finding the report mentions (others left out)."""
    return rollup(extract(text, convention=convention))


def label_reports(
    texts: Iterable[str], *, batch_size: int = 256, cues: CueSet | None = None
) -> list[dict[str, str]]:
    """``label_report`` for many texts at once (batched through spaCy)."""
    lex = load_lexicon()
    return [rollup(ms, lex) for ms in extract_many(texts, batch_size=batch_size, cues=cues)]
