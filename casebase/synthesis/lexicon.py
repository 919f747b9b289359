"""Load and validate the finding lexicon (``lexicon.yaml``).

The vocabulary is data so that adding a finding never needs code: an entry names the
finding, its synonyms (literal phrases), optional regular-expression patterns, optional
"normal statements" (phrases whose status is fixed, e.g. "heart size is normal" asserts
cardiomegaly is absent) and an optional parent it rolls up into (device kinds roll up
into ``support_devices``).

Patterns may use a few macros, expanded here so that the YAML stays readable:

    {be}    a copula: is, are, was, appears, remains, has been, ...
    {sev}   zero or more severity/temporal adverbs: mild, moderately, stable, again, ...
    {gap}   up to three arbitrary words (no punctuation), matched lazily
    {det}   an optional article
    {normal} "normal", "within normal limits", "within limits of normal", "unremarkable"
    {size}  a measurement: "2 cm", "1.5-cm", "8mm", "2.1 x 2 cm"

A malformed entry raises :class:`~casebase.errors.ConfigError` naming the entry, so that a
typo in the YAML is reported at load time rather than as a silent miss at extraction time.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casebase.errors import ConfigError
from casebase.imaging.vocabulary import STATUSES
from casebase.synthesis.yaml_data import load_mapping

DEFAULT_PATH = Path(__file__).with_name("lexicon.yaml")

MACROS: dict[str, str] = {
    "be": (
        r"(?:is|are|was|were|appears?|remains?|seems?|looks?|has\s+been|have\s+been"
        r"|is\s+again|are\s+again|again\s+(?:is|are))"
    ),
    "sev": (
        r"(?:(?:very|mild|mildly|minimal|minimally|slight|slightly|moderate|moderately"
        r"|marked|markedly|severe|severely|significant|significantly|borderline|stable"
        r"|stably|persistent|persistently|again|still|now|somewhat|grossly|overall"
        r"|increasingly|chronically|diffusely|extensive|extensively|small|large|tiny|new"
        r"|bilateral|bilaterally|right|left)[\s,]+){0,4}"
    ),
    "gap": r"(?:[\w'/-]+\s+){0,3}?",
    "det": r"(?:(?:the|a|an)\s+)?",
    "size": r"(?:\d+(?:\.\d+)?\s*(?:x\s*\d+(?:\.\d+)?\s*)*-?(?:cm|mm)\b)",
    "normal": (
        r"(?:normal|within\s+(?:the\s+)?normal\s+limits|within\s+(?:the\s+)?limits\s+of\s+normal"
        r"|unremarkable)"
    ),
}

_MACRO_RE = re.compile(r"\{(" + "|".join(MACROS) + r")\}")
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ALLOWED_KEYS = {
    "id",
    "label",
    "synonyms",
    "patterns",
    "normal",
    "normal_status",
    "exclude",
    "parent",
    "blocks_no_finding",
    "description",
}


@dataclass(frozen=True)
class Finding:
    """One lexicon entry, validated; ``regex`` matches any of its mentions."""

    id: str
    label: str
    synonyms: tuple[str, ...]
    patterns: tuple[str, ...]
    normal: tuple[str, ...]
    normal_status: str
    parent: str | None
    blocks_no_finding: bool
    regex: re.Pattern[str] | None
    normal_regex: re.Pattern[str] | None
    exclude_regex: re.Pattern[str] | None


@dataclass(frozen=True)
class Lexicon:
    """All findings, in file order, plus a digest of the source for versioning."""

    version: str
    findings: tuple[Finding, ...]
    digest: str

    @functools.cached_property
    def by_id(self) -> dict[str, Finding]:
        return {f.id: f for f in self.findings}

    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    def ancestors(self, finding_id: str) -> list[str]:
        """The chain of parents of a finding, nearest first (cycles are rejected at load)."""
        chain: list[str] = []
        parent = self.by_id[finding_id].parent
        while parent is not None:
            chain.append(parent)
            parent = self.by_id[parent].parent
        return chain


def expand_macros(pattern: str) -> str:
    """Replace ``{be}``-style macros by their regular expressions."""
    return _MACRO_RE.sub(lambda m: MACROS[m.group(1)], pattern)


def phrase_to_regex(phrase: str) -> str:
    """A literal synonym as a regex: flexible whitespace/hyphens, optional plural suffix."""
    words = phrase.strip().split()
    parts = [re.escape(w).replace(r"\-", r"[-\s]?") for w in words]
    body = r"\s+".join(parts)
    if words and words[-1][-1].isalpha():
        body += r"(?:s|es)?"
    return body


def _lower_literals(pattern: str) -> str:
    """Lower-case the literal letters of a regex, leaving escapes such as \\S alone."""
    return re.sub(r"(?<!\\)[A-Z]", lambda m: m.group().lower(), pattern)


def _compile(entry_id: str, alternatives: list[str], what: str) -> re.Pattern[str] | None:
    if not alternatives:
        return None
    # Longest first, so that at one position "pleural effusion" beats "effusion".
    ordered = sorted(alternatives, key=len, reverse=True)
    source = r"(?<![\w-])(?:" + "|".join(ordered) + r")(?![\w])"
    try:
        # Case-sensitive on purpose: the extractor lower-cases the text first, which is
        # several times faster than IGNORECASE on long reports.
        return re.compile(_lower_literals(source))
    except re.error as exc:
        # Find the culprit so the message points at one line of the YAML.
        for alt in alternatives:
            try:
                re.compile(alt)
            except re.error as inner:
                raise ConfigError(
                    f"lexicon entry {entry_id!r}: invalid {what} {alt!r}: {inner}"
                ) from exc
        raise ConfigError(f"lexicon entry {entry_id!r}: invalid {what}: {exc}") from exc


def _str_list(entry_id: str, entry: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = entry.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f"lexicon entry {entry_id!r}: {key!r} must be a list of non-empty strings"
        )
    return tuple(v.strip() for v in value)


def _parse_entry(index: int, entry: Any) -> Finding:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"lexicon entry #{index}: expected a mapping, got {type(entry).__name__}")
    entry_id = entry.get("id")
    if not isinstance(entry_id, str) or not _ID_RE.match(entry_id):
        raise ConfigError(f"lexicon entry #{index}: 'id' must be snake_case text, got {entry_id!r}")
    unknown = set(entry) - _ALLOWED_KEYS
    if unknown:
        raise ConfigError(f"lexicon entry {entry_id!r}: unknown keys {sorted(unknown)}")
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"lexicon entry {entry_id!r}: 'label' is required")
    synonyms = _str_list(entry_id, entry, "synonyms")
    patterns = _str_list(entry_id, entry, "patterns")
    normal = _str_list(entry_id, entry, "normal")
    exclude = _str_list(entry_id, entry, "exclude")
    normal_status = entry.get("normal_status", "absent")
    if normal_status not in STATUSES:
        raise ConfigError(f"lexicon entry {entry_id!r}: 'normal_status' must be one of {STATUSES}")
    parent = entry.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"lexicon entry {entry_id!r}: 'parent' must be a finding id")
    blocks = entry.get("blocks_no_finding", True)
    if not isinstance(blocks, bool):
        raise ConfigError(f"lexicon entry {entry_id!r}: 'blocks_no_finding' must be true/false")
    mention_alts = [phrase_to_regex(s) for s in synonyms] + [expand_macros(p) for p in patterns]
    return Finding(
        id=entry_id,
        label=label.strip(),
        synonyms=synonyms,
        patterns=patterns,
        normal=normal,
        normal_status=normal_status,
        parent=parent,
        blocks_no_finding=blocks,
        regex=_compile(entry_id, mention_alts, "synonym/pattern"),
        normal_regex=_compile(entry_id, [expand_macros(p) for p in normal], "normal statement"),
        exclude_regex=_compile(entry_id, [expand_macros(p) for p in exclude], "exclude phrase"),
    )


def parse_lexicon(source: str, *, origin: str = "<string>") -> Lexicon:
    """Parse and validate lexicon YAML text; raise ConfigError naming the bad entry."""
    data = load_mapping(source, what="lexicon", origin=origin, key="findings")
    if not isinstance(data["findings"], list):
        raise ConfigError(f"lexicon {origin}: expected a mapping with a 'findings' list")
    findings = tuple(_parse_entry(i, e) for i, e in enumerate(data["findings"]))
    ids = [f.id for f in findings]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"lexicon {origin}: duplicate ids {dupes}")
    known = set(ids)
    for f in findings:
        if f.parent is not None and f.parent not in known:
            raise ConfigError(f"lexicon entry {f.id!r}: unknown parent {f.parent!r}")
        if f.regex is None and f.normal_regex is None:
            raise ConfigError(f"lexicon entry {f.id!r}: needs synonyms, patterns or normal")
    lex = Lexicon(
        version=str(data.get("version", "0")),
        findings=findings,
        digest=hashlib.sha256(source.encode("utf-8")).hexdigest()[:12],
    )
    for f in findings:
        seen = {f.id}
        parent = f.parent
        while parent is not None:
            if parent in seen:
                raise ConfigError(f"lexicon entry {f.id!r}: parent cycle through {parent!r}")
            seen.add(parent)
            parent = lex.by_id[parent].parent
    return lex


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Load a lexicon file (the packaged one by default); cached per path."""
    return _load_cached(str(Path(path) if path is not None else DEFAULT_PATH))


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> Lexicon:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"lexicon {path}: cannot be read: {exc}") from exc
    return parse_lexicon(text, origin=path)
