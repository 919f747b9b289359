"""The labeller's spaCy pipeline: a blank English tokenizer and report-aware sentences.

Assertion scopes never cross a sentence, so a missed sentence end lets a negation run
into the next sentence ("… of hepatitis-C. The spleen is normal in size" must not be
negated by "not tailored" before it). spaCy's sentencizer splits at ".", "!" and "?"
tokens; reports need three more rules, applied by one component:

* a line break, or a run of stops ("effusion.. Minimal"), ends a sentence: report
  sections and list items are sentences;
* a single letter with a stop ("hepatitis-C.", "vitamin D.") that the tokenizer keeps as
  one token ends a sentence when a capitalised word follows, unless it is an initial
  after a title or another initial ("Dr. J. Smith");
* a question mark in front of a word ("?pneumonia", "cough. ? PE") is a query about that
  word, not the end of a sentence: it starts the sentence that holds the word.

No model is downloaded; the pipeline is built once per process.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # spaCy is imported by get_nlp(), the first call that parses text
    from spacy.language import Language
    from spacy.tokens import Doc

_INITIAL = re.compile(r"^[A-Za-z]\.$")
_TITLES = {"dr.", "mr.", "mrs.", "ms.", "prof.", "st.", "drs."}
_STOPS = {".", "!", "?"}


def _is_break(text: str) -> bool:
    return ("\n" in text and text.isspace()) or (len(text) > 1 and not text.strip(".!?"))


def _ends_at_initial(doc: Doc, i: int) -> bool:
    """Token i is "C." of "hepatitis-C. The …": a sentence ends after it."""
    tok = doc[i]
    if not tok.whitespace_ or i + 1 >= len(doc):
        return False
    nxt = doc[i + 1].text
    if len(nxt) < 2 or not nxt[0].isupper() or not nxt.isalpha():
        return False
    prev = doc[i - 1].text.lower() if i > 0 else ""
    return not (prev in _TITLES or _INITIAL.match(prev))


def _is_prefix_query(doc: Doc, i: int) -> bool:
    """Token i is a "?" that asks about the word after it ("?pneumonia", ". ? PE")."""
    if i + 1 >= len(doc) or not doc[i + 1].text[:1].isalpha():
        return False
    return i == 0 or bool(doc[i - 1].whitespace_) or doc[i - 1].is_space


def _report_sentences(doc: Doc) -> Doc:
    """The three report rules of the module docstring, after spaCy's sentencizer.

    Works on the ORTH array, so a megabyte report creates Token objects only where a
    rule may apply.
    """
    strings = doc.vocab.strings
    kinds: dict[int, str] = {}
    orths = doc.to_array("ORTH")
    for i in range(len(orths)):
        h = int(orths[i])
        kind = kinds.get(h)
        if kind is None:
            text = strings[h]
            kind = (
                "break"
                if _is_break(text)
                else "query"
                if text == "?"
                else "initial"
                if _INITIAL.match(text)
                else ""
            )
            kinds[h] = kind
        if not kind:
            continue
        if kind == "break":
            if i + 1 < len(orths):
                doc[i + 1].is_sent_start = True
        elif kind == "query":
            if _is_prefix_query(doc, i):
                if i > 0:
                    doc[i].is_sent_start = True
                doc[i + 1].is_sent_start = False
        elif _ends_at_initial(doc, i):
            doc[i + 1].is_sent_start = True
    return doc


@functools.lru_cache(maxsize=1)
def get_nlp() -> Language:
    """The blank English pipeline (built once): tokenizer, sentencizer, report rules."""
    import spacy
    from spacy.language import Language

    if "casebase_report_sentences" not in Language.factories:
        Language.component("casebase_report_sentences", func=_report_sentences)
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("casebase_report_sentences")
    nlp.max_length = 2_000_000
    return nlp


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
