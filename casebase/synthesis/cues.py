"""Load and validate the assertion cues (``cues.yaml``) and match them in a sentence.

The cue vocabulary is data, like the finding lexicon: adding a hedge or a post-target
negation never needs code. This module expands the compact phrase syntax of the YAML
("[has|have] resolved|cleared") into token sequences, tokenised by the labeller's own
tokenizer so that "can't" or "r/o" match the way the report is tokenised, and matches
them on a sentence's words with the whitespace tokens left out, so that dictated runs of
spaces ("is  not seen") and line breaks inside a phrase do not break a cue.

A malformed file raises :class:`~casebase.errors.ConfigError` naming the kind and the
phrase, at load time.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casebase.errors import ConfigError
from casebase.synthesis.yaml_data import load_mapping

DEFAULT_PATH = Path(__file__).with_name("cues.yaml")
CONVENTIONS_PATH = Path(__file__).with_name("conventions.yaml")
STRICT = "strict"  # the cue file as written; the other conventions are conventions.yaml's

FORWARD, BACKWARD, BOTH = "forward", "backward", "both"
KINDS = ("negation", "resolved", "change", "pseudo", "hedge", "differential", "request", "link")
_CLAUSE_KEYS = (
    "list_words",
    "list_breaks",
    "clause_starters",
    "presence_starters",
    "copulas",
    "copula_adverbs",
)

_REQUIRED = {"cues", "terminations", "clauses", "alternatives"}
_TOP_KEYS = _REQUIRED | {"version", "phrase_scope"}

Phrase = tuple[str, ...]


@dataclass(frozen=True)
class CueMatch:
    """One match of a cue phrase: word indices [start, end) in the matched sequence."""

    kind: str
    direction: str
    start: int
    end: int


class PhraseTable:
    """Token phrases -> a value, matched at every position of a word sequence."""

    def __init__(self, phrases: Mapping[Phrase, Any]) -> None:
        self.phrases = dict(phrases)
        self.first_words = frozenset(p[0] for p in self.phrases)
        self.max_len = max((len(p) for p in self.phrases), default=0)

    def matches(self, words: Sequence[str]) -> Iterator[tuple[int, int, Any]]:
        """Every (start, end, value) of a phrase in ``words``, all lengths included."""
        n = len(words)
        for i, word in enumerate(words):
            if word not in self.first_words:
                continue
            for length in range(1, min(self.max_len, n - i) + 1):
                value = self.phrases.get(tuple(words[i : i + length]))
                if value is not None:
                    yield i, i + length, value


@dataclass(frozen=True)
class CueSet:
    """The validated cue file: cue phrases, terminations and the clause vocabulary."""

    version: str
    digest: str
    cues: PhraseTable  # phrase -> (kind, direction)
    terminations: PhraseTable  # phrase -> True
    termination_words: frozenset[str]
    termination_punct: frozenset[str]
    clauses: Mapping[str, frozenset[str]]
    phrase_scope: frozenset[str]  # kinds whose forward scope ends at the first list word
    alternatives: frozenset[Phrase]  # "or": two findings offered as a differential

    def find(self, words: Sequence[str]) -> list[CueMatch]:
        """All cue matches in ``words`` (overlapping ones included)."""
        return [CueMatch(k, d, s, e) for s, e, (k, d) in self.cues.matches(words)]

    def termination_starts(self, words: Sequence[str]) -> set[int]:
        """Indices of words that end a scope (a termination word, phrase or stop sign)."""
        out = {
            i
            for i, w in enumerate(words)
            if w in self.termination_words or w in self.termination_punct
        }
        out.update(s for s, _, _ in self.terminations.matches(words))
        return out


def expand(phrase: str) -> list[Phrase]:
    """The token phrases that one line of the YAML stands for ("[has] resolved|cleared").

    Each alternative word is tokenised on its own (spaCy splits text at whitespace
    before anything else, so a phrase's tokens are its words' tokens, joined).
    """
    options: list[list[Phrase]] = []
    for word in phrase.split():
        optional = word.startswith("[") and word.endswith("]")
        inner = word[1:-1] if optional else word
        alts = inner.split("|")
        if "[" in inner or "]" in inner or not all(alts):
            raise ValueError(f"bad word {word!r} (brackets hold single words: '[a|b]')")
        options.append([_tokenise(a) for a in alts] + ([()] if optional else []))
    out = []
    for combo in itertools.product(*options):
        tokens = tuple(t for part in combo for t in part)
        if tokens:
            out.append(tokens)
    return out


@functools.lru_cache(maxsize=4096)
def _tokenise(text: str) -> Phrase:
    from casebase.synthesis.sentences import get_nlp

    return tuple(t.lower_ for t in get_nlp().tokenizer(text) if not t.is_space)


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"cues {where}: expected a list of non-empty strings")
    return [v.strip() for v in value]


def _phrases(lines: list[str], where: str) -> list[Phrase]:
    out: list[Phrase] = []
    for line in lines:
        try:
            out.extend(expand(line))
        except ValueError as exc:
            raise ConfigError(f"cues {where}: phrase {line!r}: {exc}") from exc
    return out


def _parse_cues(data: Any) -> dict[Phrase, tuple[str, str]]:
    if not isinstance(data, Mapping):
        raise ConfigError("cues: 'cues' must map kinds to directions")
    unknown = set(data) - set(KINDS)
    if unknown:
        raise ConfigError(f"cues: unknown kinds {sorted(unknown)} (known: {list(KINDS)})")
    table: dict[Phrase, tuple[str, str]] = {}
    for kind, by_direction in data.items():
        if not isinstance(by_direction, Mapping) or set(by_direction) - {FORWARD, BACKWARD}:
            raise ConfigError(f"cues {kind}: expected 'forward' and/or 'backward' lists")
        for direction, lines in by_direction.items():
            where = f"{kind}.{direction}"
            for phrase in _phrases(_str_list(lines, where), where):
                old = table.get(phrase)
                if old is None or old == (kind, direction):
                    table[phrase] = (kind, direction)
                elif old[0] == kind:
                    table[phrase] = (kind, BOTH)
                else:
                    raise ConfigError(
                        f"cues {where}: phrase {' '.join(phrase)!r} is also a {old[0]} cue"
                    )
    return table


def parse_cues(source: str, *, origin: str = "<string>") -> CueSet:
    """Parse and validate cue YAML text; raise ConfigError naming what is wrong."""
    data = load_mapping(source, what="cues", origin=origin, key="cues")
    return cues_from_data(data, origin=origin, digest=_digest(source))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def cues_from_data(data: Mapping[str, Any], *, origin: str, digest: str) -> CueSet:
    """Validate a cue file's parsed data (``parse_cues``, or a convention's edit of it)."""
    if set(data) - _TOP_KEYS or not _REQUIRED <= set(data):
        raise ConfigError(f"cues {origin}: expected the keys {sorted(_TOP_KEYS)}")
    terms = data["terminations"]
    if not isinstance(terms, Mapping) or set(terms) != {"words", "phrases", "punctuation"}:
        raise ConfigError(f"cues {origin}: 'terminations' needs words, phrases, punctuation")
    clauses = data["clauses"]
    if not isinstance(clauses, Mapping) or set(clauses) != set(_CLAUSE_KEYS):
        raise ConfigError(f"cues {origin}: 'clauses' needs exactly {list(_CLAUSE_KEYS)}")
    phrase_scope = _str_list(data.get("phrase_scope", []), "phrase_scope")
    if set(phrase_scope) - set(KINDS):
        raise ConfigError(f"cues {origin}: 'phrase_scope' names unknown kinds")
    term_phrases = _phrases(_str_list(terms["phrases"], "terminations.phrases"), "terminations")
    return CueSet(
        version=str(data.get("version", "0")),
        digest=digest,
        cues=PhraseTable(_parse_cues(data["cues"])),
        terminations=PhraseTable(dict.fromkeys(term_phrases, True)),
        termination_words=frozenset(_str_list(terms["words"], "terminations.words")),
        termination_punct=frozenset(_str_list(terms["punctuation"], "terminations.punctuation")),
        clauses={k: frozenset(_str_list(clauses[k], f"clauses.{k}")) for k in _CLAUSE_KEYS},
        phrase_scope=frozenset(phrase_scope),
        alternatives=frozenset(_phrases(_str_list(data["alternatives"], "alt"), "alternatives")),
    )


def load_cues(path: str | Path | None = None, *, convention: str = STRICT) -> CueSet:
    """Load a cue file (the packaged one by default) as read under a coding convention
    (``conventions.yaml``; ``strict``: as written); cached per path and convention."""
    return _load_cached(str(Path(path) if path is not None else DEFAULT_PATH), convention)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, convention: str) -> CueSet:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cues {path}: cannot be read: {exc}") from exc
    if convention == STRICT:
        return parse_cues(text, origin=path)
    edits = load_conventions().get(convention)
    if edits is None:
        raise ConfigError(
            f"unknown labelling convention {convention!r} (known: {', '.join(conventions())})"
        )
    data = load_mapping(text, what="cues", origin=path, key="cues")
    return cues_from_data(
        apply_convention(data, edits),
        origin=f"{path} ({convention})",
        digest=_digest(f"{text}\0{convention}\0{conventions_digest()}"),
    )


# --------------------------------------------------------------------------- conventions
@dataclass(frozen=True)
class Convention:
    """Edits to the cue file that make the labeller code as a site's coders do."""

    name: str
    description: str
    drop_kinds: frozenset[str]
    drop_words: frozenset[str]
    alternatives: bool


def conventions() -> list[str]:
    """Every convention's name, ``strict`` first."""
    return [STRICT, *load_conventions()]


def conventions_digest() -> str:
    """sha256 prefix of ``conventions.yaml``: part of the labeller's released data."""
    return hashlib.sha256(CONVENTIONS_PATH.read_bytes()).hexdigest()[:12]


@functools.cache
def load_conventions() -> dict[str, Convention]:
    """The packaged conventions, validated; a malformed entry raises ConfigError."""
    where = CONVENTIONS_PATH.name
    text = CONVENTIONS_PATH.read_text(encoding="utf-8")
    data = load_mapping(text, what="conventions", origin=str(CONVENTIONS_PATH))
    out = {}
    for name, entry in data.items():
        keys = {"description", "drop_kinds", "drop_words", "alternatives"}
        if name == STRICT or not isinstance(entry, Mapping) or set(entry) - keys:
            raise ConfigError(f"{where} {name}: expected the keys {sorted(keys)}")
        kinds = _str_list(entry.get("drop_kinds", []), f"{name}.drop_kinds")
        if set(kinds) - set(KINDS):
            raise ConfigError(f"{where} {name}: drop_kinds names unknown kinds")
        out[str(name)] = Convention(
            name=str(name),
            description=str(entry.get("description", "")),
            drop_kinds=frozenset(kinds),
            drop_words=frozenset(_str_list(entry.get("drop_words", []), f"{name}.drop_words")),
            alternatives=bool(entry.get("alternatives", True)),
        )
    return out


def apply_convention(data: Mapping[str, Any], convention: Convention) -> dict[str, Any]:
    """The cue file's data with a convention's edits: its kinds and words dropped."""
    out = dict(data)
    out["cues"] = {}
    for kind, by_direction in data["cues"].items():
        if kind in convention.drop_kinds:
            continue
        kept = {
            d: lines
            for d, ls in by_direction.items()
            if (lines := _without_words(ls, convention.drop_words))
        }
        if kept:
            out["cues"][kind] = kept
    if "phrase_scope" in data:
        out["phrase_scope"] = [k for k in data["phrase_scope"] if k not in convention.drop_kinds]
    if not convention.alternatives:
        out["alternatives"] = []
    return out


def _without_words(lines: list[str], words: frozenset[str]) -> list[str]:
    """Cue phrases without the choices in ``words``; a phrase whose required word has no
    choice left goes (an optional ``[a|b]`` word left empty just goes from the phrase)."""
    kept = []
    for line in lines:
        parts: list[str] = []
        for word in line.split():
            optional = word.startswith("[") and word.endswith("]")
            choices = [c for c in (word[1:-1] if optional else word).split("|") if c not in words]
            if choices:
                joined = "|".join(choices)
                parts.append(f"[{joined}]" if optional else joined)
            elif not optional:
                break
        else:
            if parts:
                kept.append(" ".join(parts))
    return kept
