"""The cue file (cues.yaml): its phrase syntax, validation, and matching without spaces."""

from __future__ import annotations

import pytest

from casebase.errors import ConfigError
from casebase.synthesis import label_reports
from casebase.synthesis.cues import BOTH, DEFAULT_PATH, expand, load_cues, parse_cues
from casebase.synthesis.sentences import get_nlp

MINIMAL = """
cues:
  negation:
    forward: ["no"]
terminations: {words: [but], phrases: ["positive for"], punctuation: [";"]}
alternatives: [or]
clauses:
  list_words: [or]
  list_breaks: [","]
  clause_starters: [the]
  presence_starters: [stable]
  copulas: [is]
  copula_adverbs: [also]
"""


def test_expand_optional_and_alternative_words() -> None:
    assert expand("[has|have] resolved|cleared") == [
        ("has", "resolved"),
        ("has", "cleared"),
        ("have", "resolved"),
        ("have", "cleared"),
        ("resolved",),
        ("cleared",),
    ]
    # words are tokenised like a report
    assert expand("can't exclude") == [("ca", "n't", "exclude")]
    assert expand("r/o") == [("r", "/", "o")]


def test_packaged_cues_load_and_cover_both_directions() -> None:
    cues = load_cues()
    assert cues.cues.phrases[("versus",)] == ("differential", BOTH)
    assert cues.cues.phrases[("denies",)] == ("negation", "forward")
    assert cues.cues.phrases[(":", "none")] == ("negation", "backward")
    assert cues.cues.phrases[("evaluate", "for")] == ("request", "forward")
    assert ("or",) in cues.alternatives and ("and/or",) in cues.alternatives


def test_matching_skips_whitespace_tokens() -> None:
    doc = get_nlp()("Pneumothorax is   not \t seen.")
    words = [t.lower_ for t in doc if not t.is_space]
    found = {(m.kind, words[m.start], words[m.end - 1]) for m in load_cues().find(words)}
    assert ("negation", "not", "seen") in found


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('forward: ["no"]', 'forward: ["[no"]'), "brackets hold single words"),
        (("negation:", "negashun:"), "unknown kinds"),
        (('forward: ["no"]', 'sideways: ["no"]'), "'forward' and/or 'backward'"),
        (('forward: ["no"]', 'forward: ["no", 3]'), "list of non-empty strings"),
        (("alternatives: [or]", "alternates: [or]"), "expected the keys"),
        (("  copula_adverbs: [also]\n", ""), "'clauses' needs exactly"),
        (('punctuation: [";"]', 'stops: [";"]'), "'terminations' needs"),
    ],
)
def test_malformed_cue_file_names_the_problem(change: tuple[str, str], message: str) -> None:
    assert parse_cues(MINIMAL).version == "0"
    with pytest.raises(ConfigError, match=message):
        parse_cues(MINIMAL.replace(*change))


def test_a_phrase_may_belong_to_one_kind_only() -> None:
    text = MINIMAL.replace('forward: ["no"]', 'forward: ["no"]\n  hedge:\n    forward: ["no"]')
    with pytest.raises(ConfigError, match="'no' is also a negation cue"):
        parse_cues(text)


def test_not_yaml() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_cues("cues: [unclosed")


def test_another_cue_file_can_be_plugged_in(tmp_path) -> None:
    text = "Left basilar atelectasis or scarring."
    source = tmp_path / "cues.yaml"
    packaged = DEFAULT_PATH.read_text()
    source.write_text(packaged.replace("alternatives: [or, and/or]", "alternatives: []"))
    other = load_cues(source)
    assert other.digest != load_cues().digest and not other.alternatives
    [default], [plugged] = label_reports([text]), label_reports([text], cues=other)
    assert default["atelectasis"] == "uncertain" and plugged["atelectasis"] == "present"
