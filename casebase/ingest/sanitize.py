"""Report sanitisation: what may leave the ingest boundary (seed 000, failure mode 1).

Raw reports carry identifiers, timestamps and references to prior studies that no
reader of a shared view, and no LLM, has any use for. Before a report is stored in
the shared views or sent anywhere, :func:`sanitize_report` keeps only its findings
and impression and drops the rest. The choices, and why:

* **Sections** (found by :mod:`casebase.synthesis.sections`, which the labeller
  shares). Only FINDINGS and IMPRESSION survive (aliases: CONCLUSION, OPINION,
  SUMMARY, INTERPRETATION, FINDINGS/IMPRESSION, which counts as findings). HISTORY,
  INDICATION, CLINICAL…, COMPARISON, TECHNIQUE, EXAM, ADDENDUM, RECOMMENDATION and
  identity headers (NAME, MRN, DOB…) are dropped, as is anything before the first
  header. Addenda are dropped on purpose: they mostly record who was called when. A
  report with headers but no findings/impression section yields nothing rather than
  guessing. A text with no known header (free-text case notes) is all findings.
* **Identifiers are dropped, not replaced** by tokens like ``[DATE]``, so the text stays
  natural for the findings labeller; a preceding preposition goes with the date
  ("seen on 03/04/2019." -> "seen."). ``removed`` says which categories were scrubbed.
* **Dates**: numeric (03/04/2019, 2019-04-03, 03.04.2019), month names (March 4, 2019;
  4th of March; March 2019; a bare full month name), bare years (not inside disease
  names such as COVID-2019 or "coronavirus disease 2019", and not doses such as
  "2000 mg"). Relative days ("on day 5", "9th day of onset") are kept: they identify
  no one and carry the clinical course.
* **Ages** ("62-year-old", "aged 62", "62 y/o", "44M" at a sentence start; never "8F"
  catheters mid-sentence), **times**, **names** (honorific + capitalised words,
  "signed/dictated by …" to end of line, "Courtesy of …", name + MD), **ids** (labelled
  MRN/accession/ID values, digit runs of 5 or more that are not lab values, tokens of
  6+ letters and digits with 3+ digits, dotted UIDs), **phones, emails, URLs**, and
  **places**: institution names (… Hospital/Clinic/Medical Center …) and a capitalised
  name after "at/from/in" that ends its phrase ("travel from Wuhan,"), which spares
  anatomy and eponyms ("in the right lower lobe", "from Staphylococcus aureus").
* **Comparison references**: sentences that are about the comparison ("Comparison:
  none.", "No prior studies."), leading clauses ("Compared with the study of
  03/04/2019, the effusion …" -> "The effusion …") and inline clauses ("unchanged
  since the previous exam" -> "unchanged") go; a clause is only dropped when it names
  a prior study, so "more on the right compared to left" stays.
* **Communication sentences** ("Dr. X was notified at 10:30") go whole.
* **"XXXX"** de-identification runs collapse to one "XXXX" (it often stands for an
  ordinary word, e.g. "lymph XXXX", so dropping it would garble the sentence).

Every pattern is bounded or anchored at token starts, so the cost is linear in the
input length; junk (None, bytes, NUL bytes, 1 MB) never raises.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

# The one section finder, shared with the labeller (which must not import ingest).
from casebase.synthesis.sections import split_sections

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES",
    "SanitizedReport",
    "sanitize_report",
    "sanitize_text",
    "sanitize_value",
    "split_sections",
]

#: Scrub categories, in the order ``SanitizedReport.removed`` lists them.
CATEGORIES = (
    "section",
    "comparison",
    "communication",
    "date",
    "time",
    "age",
    "name",
    "id",
    "phone",
    "email",
    "url",
    "place",
    "deid_token",
    "control",
)


@dataclass(frozen=True)
class SanitizedReport:
    """Findings and impression safe for shared views and LLMs; ``removed`` lists the
    categories of what was scrubbed (for audit; never the scrubbed text itself)."""

    findings: str | None
    impression: str | None
    removed: tuple[str, ...] = ()


# --------------------------------------------------------------------------- patterns

_MON = (
    r"(?=[A-Z])(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?"
    r"|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b"
    r"(?:\.(?=\s*\d))?"
)
_MONTH_FULL = (
    r"(?:January|February|March|April|June|July|August|September|October|"
    r"November|December|JANUARY|FEBRUARY|MARCH|APRIL|JUNE|JULY|AUGUST|"
    r"SEPTEMBER|OCTOBER|NOVEMBER|DECEMBER)\b"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\b"
_YEAR = r"(?:(?:19|20)\d{2}\b|'\d{2}\b)"
_UNITS = (
    r"(?:\s*(?:(?:mg|g|kg|mcg|ug|µg|ng|pg|ml|mL|cc|l|L|dl|dL|IU|iu|U|units?|mm|cm|m|"
    r"HU|mmHg|mEq|mmol|umol|µmol|cells|copies|ms|kV|kVp|mAs|Gy|mSv|bpm|k|K)\b|%|/|×))"
)
_PREP = (
    r"(?:\b(?:on|in|of|dated|from|since|until|till|through|to|at|by|during|between|"
    r"and|On|In|From|Since|Dated)\s+(?:the\s+)?)?"
)
_DATE = re.compile(
    _PREP
    + r"(?:"
    + "|".join(
        [
            # ISO date (with an optional time) and other numeric forms
            r"(?<![\w/.:-])(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:[0-2]?\d|3[01])"
            r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w/-]|\.\d)",
            r"(?<![\w/.:-])\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})(?![\w/-]|\.\d)",
            r"(?<![\w/.:-])\d{1,2}[-.]\d{1,2}[-.](?:19|20)\d{2}(?![\w/-]|\.\d)",
            r"(?<![\w/.:-])\d{2}[-.]\d{2}[-.]\d{2}(?![\w/-]|\.\d)",
            r"(?<![\w/.:-])\d{1,2}[/-](?:19|20)\d{2}(?![\w/-]|\.\d)",
            r"(?<=\bon )\d{1,2}/\d{1,2}(?![\w/]|\.\d)",
            r"(?<=\bdated )\d{1,2}/\d{1,2}(?![\w/]|\.\d)",
            r"(?<=\bdated )X{3,}(?:,\s*X{3,})?",
            # month names
            _MON + r"\s+" + _DAY + r"(?:,?\s+" + _YEAR + r")?",
            r"(?<![\w.])" + _DAY + r"(?:\s+of)?\s+" + _MON + r"(?:,?\s+" + _YEAR + r")?",
            _MON + r",?\s+" + _YEAR,
            _MONTH_FULL,
            # year ranges and bare years (not COVID-2019, 2019-nCoV, "disease 2019", "2000 mg")
            r"(?<![\w.,-])(?:19|20)\d{2}\s?[-–/]\s?(?:(?:19|20)\d{2}|\d{2})(?![\w-]|\.\d)",
            r"(?<![\w.,-])(?<!disease )(?<!Disease )(?:19|20)\d{2}(?![\w-]|[.,]\d)(?!"
            + _UNITS
            + ")",
        ]
    )
    + r")"
)
_TIME = re.compile(
    r"(?:\b(?:at|@)\s+)?(?:"
    + "|".join(
        [
            r"(?<![\w:.])\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*(?:[AaPp]\.?[Mm]\.?(?![A-Za-z])|"
            r"hours\b|hrs\b|h\b))?(?![\w:])",
            r"(?<![\w.])(?:\d{1,2}|X{3,})\s*(?:[ap]\.m\.|[AP]\.M\.|am\b|pm\b|AM\b|PM\b)",
            r"(?<![\w.:])(?:[01]\d|2[0-3])[0-5]\d\s?(?:hours|hrs|hr|h)\b",
        ]
    )
    + r")"
)
_NUMWORD = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
    r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|"
    r"fifty|sixty|seventy|eighty|ninety|hundred)(?:[- ](?:one|two|three|four|five|"
    r"six|seven|eight|nine))?"
)
_AGE = re.compile(
    r"(?:\b(?P<art>an?|An?)\s+)?(?:"
    + "|".join(
        [
            r"\b(?:\d{1,3}|X{3,}|(?i:" + _NUMWORD + r"))[- ]?(?i:years?|yrs?|months?|weeks?|days?)"
            r"[- ]?(?i:old)\b",
            r"\b\d{1,3}[- ]?(?i:y/o|y\.o\.|yo\b|yrs?\b(?! ago)|years? of age)",
            r"\b(?i:aged?)\s*[:=]?\s*\d{1,3}(?:\s*(?i:years|yrs|y)\b)?",
            r"\b[Ii]n\s+(?:his|her|their)\s+(?:early\s+|mid-?\s*|late\s+)?(?:\d0'?s\b|"
            r"(?i:twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties))",
            r"(?:(?<![^\n.!?])|(?<=[.!?] )|(?<=\n ))\d{1,3}\s?(?:yo\s?)?[MF]\b(?![-/])",
        ]
    )
    + r")"
)
_HONORIFIC = r"(?<![A-Za-z])(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Professor|Doctor)\b\.?"
_NAME_STOP = r"(?!(?:Right|Left|The|There|This|These|No|Bilateral|Chest|Findings|Impression)\b)"
_NAME_TOK = _NAME_STOP + r"(?:X{3,}|[A-Z]\.|[A-Z][A-Za-z'’]+(?:-[A-Z][A-Za-z'’]+)?)"
_CRED = r"(?:,?\s*(?:(?:MD|DO|PhD|FRCR|FRCPC|MBBS|RN|NP|PA-C)\b|M\.D\.|D\.O\.|Ph\.D\.))"
_NAME = re.compile(
    "|".join(
        [
            r"(?m:^)[ \t]*(?i:(?:electronically\s+)?(?:signed|reviewed|verified|approved|reported|"
            r"read|interpreted|dictated|transcribed)(?:\s+electronically)?\s+by\b|(?:patient(?:\s+name)?"
            r"|name|referring(?:\s+(?:physician|doctor|clinician))?|attending|radiologist|"
            r"technologist|ordering\s+physician)[ \t]*:)[^\n]*",
            r"\b(?i:(?:electronically\s+signed|e-signed|signed|dictated|transcribed|authenticated|"
            r"attested)(?:\s+electronically)?\s+by)\b[^\n]*",
            r"\(\s*(?i:case\s+)?(?i:courtesy)\s+of\b[^()\n]{0,300}\)",
            r"\b(?i:courtesy)\s+of\b[^.\n]{0,300}",
            _HONORIFIC
            + r"(?:[ \t]*"
            + _NAME_TOK
            + r"(?:[ \t-]{1,3}"
            + _NAME_TOK
            + r"){0,3})?"
            + _CRED
            + "?",
            r"(?<![\w.])[A-Z][a-z'’]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-z'’-]+){1,2}" + _CRED,
        ]
    )
)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}")
_URL = re.compile(
    r"(?i)(?<![\w/@.])(?:(?:https?|ftp)://|www\.)[^\s<>()\"']{1,2000}"
    r"|(?<![\w@./-])[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,4}\."
    r"(?:com|org|net|edu|gov|info|io)\b(?:/[^\s<>()\"']{0,2000})?"
)
_PHONE = re.compile(
    "|".join(
        [
            r"\b(?i:tel|phone|telephone|pager|bleep|fax|ext|extension)\b\.?\s*(?i:no\.?|number)?"
            r"\s*[:#]?\s*\+?\d[\d\s().-]{2,18}\d",
            r"(?<![\w+.])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])",
            r"(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?![\w-])",
        ]
    )
)
_ALLOWED_CODES = r"(?!(?i:2019-?ncov|covid-?2?0?19|sars-?cov-?2|bnt162b2|mrna-?1273)\b)"
_ID = re.compile(
    "|".join(
        [
            r"(?i:\b(?:mrn|mr\s?#|mr\s?no\.?|medical\s+record(?:\s+(?:number|no\.?|#))?|accession"
            r"(?:\s+(?:number|no\.?|#))?|acc(?:\.|\s?#|\s?no\.?)|patient\s+id|study\s+id|"
            r"exam(?:ination)?\s+id|order\s+(?:number|no\.?|#)|case\s+(?:number|no\.?|#|id)|"
            r"visit\s+(?:number|id)|encounter(?:\s+(?:number|id))?|rid|nhs\s+(?:number|no\.?)|ssn"
            r")(?![\w]))[ \t]{0,3}[:#=]?[ \t]{0,3}(?:[A-Za-z0-9][A-Za-z0-9/-]{0,40}"
            r"(?:\.[A-Za-z0-9/-]{1,40}){0,30})?",
            r"\b(?:ID|UID|Id)[ \t]{0,3}[:#=]?[ \t]{0,3}(?=[A-Za-z0-9-]{0,40}\d)[A-Za-z0-9-]{1,40}"
            r"(?:\.[A-Za-z0-9-]{1,40}){0,30}",
            r"(?<![\w.-])\d{3,}(?:-\d{2,}){2,4}(?![\w-])(?!" + _UNITS + ")",
            r"(?<![\w.])\d+(?:\.\d+){3,30}(?![\w]|\.\d)",
            r"(?<![\w.,])\d{5,}(?![\w]|[.,]\d)(?!" + _UNITS + ")",
            r"(?<![\w-])" + _ALLOWED_CODES + r"(?=[A-Za-z0-9]{6,20}(?![\w-]))"
            r"(?=(?:[A-Za-z]*\d){3})(?=\d*[A-Za-z])[A-Za-z0-9]{6,20}",
        ]
    )
)
_INSTITUTION = (
    r"(?:Hospitals?|Clinic|Medical\s+Cent(?:er|re)|Cent(?:er|re)s?|Infirmary|"
    r"University|Institute|College|Polyclinic|Policlinico|Ospedale|Klinikum)\b"
)
_CAP = r"[A-Z][\w'’\ufffd.-]{0,40}"
_PLACE = re.compile(
    "|".join(
        [
            r"(?:\b(?:at|from|in|to)\s+)?(?:the\s+)?(?<![\w'’\ufffd.-])(?:"
            + _CAP
            + r"\s+){1,5}"
            + _INSTITUTION
            + r"(?:,?\s+(?:of|for|de|di|at|in|Affiliated\s+to)\s+(?:the\s+)?"
            + _CAP
            + r"(?:\s+"
            + _CAP
            + r"){0,5}){0,3}(?:,\s+(?!(?:The|There|This|No|Right|Left)\b)"
            r"[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?){0,3}",
            r"\b(?:at|from|in|to)\s+(?!(?:Figure|Fig|Table|Appendix|Day|Patient|Case|Image|Panel|"
            r"Supplementary|Video|Emergency|Intensive|Department|Coronavirus|Covid|Chest|Lung|"
            r"Lungs|Right|Left|Bilateral|Upper|Lower|Middle|Hounsfield|Group|Type|Stage|Grade|"
            r"Phase|Series|Version|English|Fowler|Trendelenburg)\b)[A-Z][a-z]+(?:\s+(?:[A-Z][a-z]+|"
            r"[A-Z]{2,4}))?(?=\s*(?:[,.;:)(]|$|\s(?:and|for|on|with|where|who|which|to|in|at)\b))",
        ]
    )
)
_DEID = re.compile(r"(?<![A-Za-z])X{3,}(?:[\s,/<>-]{1,5}X{3,})+(?![A-Za-z])")
_SPACES = re.compile(r"[\u00a0\u2000-\u200b\u202f\u205f\u3000]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")

_SENT_SPLIT = re.compile(r"((?<=[.!?])[ \t]+|\n)")
_COMMUNICATION = re.compile(
    r"(?i)\b(?:discussed|communicated\s+(?:to|with|by)|called\s+(?:to|and)|(?:was|were)\s+"
    r"called|notified|paged|telephoned|by\s+(?:tele)?phone|informed\s+(?!consent)|conveyed"
    r"\s+to|relayed\s+to|result\s+notification|read\s*-?\s*back)\b"
)
_OBJ = (
    r"(?:prior|previous|recent|last|earlier|old|older|outside|preceding|baseline|"
    r"comparison|study|studies|exam|exams|examination|film|films|radiograph|radiographs|"
    r"x-?rays?|cxr|ct|mri|imaging|scan|images|one|x{3,})"
)
_COMPARISON_SENT = re.compile(
    r"(?i)^\W*(?:\d{1,2}\.\s*)?(?:no\s+)?(?:comparisons?\b|compared\b|in\s+comparison\b|"
    r"when\s+compared\b|(?:prior|previous)\s+(?:studies|study|exams?|films?|imaging|"
    r"radiographs?)\b\s*(?::|available|for|none)|priors?\s*:)"
)
_COMPARISON_WORDS = re.compile(
    r"\W*(?:\d{1,2}\.\s*)?(?:(?i:no|comparisons?|compared|in|when|none|available|made|is|"
    r"was|were|with|to|of|the|a|an|prior|priors|previous|recent|most|chest|x-?rays?|"
    r"x-?X{3,}|radiographs?|films?|studies|study|exams?|examinations?|imaging|ct|cxr|pa|ap|"
    r"and|lateral|frontal|views?|on|dated|from|one|two)\b|X{3,}|\d+)(?:[\s,:;.]+(?:(?i:no|"
    r"comparisons?|none|available|made|is|was|were|with|to|of|the|a|an|prior|priors|"
    r"previous|recent|most|chest|x-?rays?|x-?X{3,}|radiographs?|films?|studies|study|exams?|"
    r"examinations?|imaging|ct|cxr|pa|ap|and|lateral|frontal|views?|on|dated|from|one|two)"
    r"\b|X{3,}|\d+)){0,40}[\s,:;.]*"
)
_COMPARISON_LEAD = re.compile(
    r"(?i)^(\W*(?:\d{1,2}\.\s*)?)(?:as\s+|when\s+)?(?:compared\s+(?:with|to)|in\s+comparison"
    r"\s+(?:with|to)|relative\s+to|since)\b([^,;\n]{0,200}),\s*(?=\S)"
)
_COMPARISON_INLINE = re.compile(
    r"(?i)(?<![ \t,]),?[ \t]*\b(?:(?:as\s+|when\s+)?compared\s+(?:with|to)|in\s+comparison"
    r"\s+(?:with|to)|relative\s+to|since|from|than(?:\s+(?:on|in))?)\b([^,;:()\n]{0,200}?)"
    r"(?=[,;:()\n]|\.(?:\s|$)|$)"
)


def _after_comparison(sentence: str) -> str:
    """What follows a comparison statement that lacks its full stop ("Comparison XXXX,
    XXXX Hyperexpansion of the lungs.") is a finding: keep it; else drop it all."""
    words = _COMPARISON_WORDS.match(sentence)
    rest = sentence[words.end() :] if words else sentence
    return rest if re.match(r"[A-Z][a-z]+[ \t]+\S", rest) else ""


def _obj_is_prior(obj: str) -> bool:
    words = obj.strip().lower()
    if not re.match(r"(?:the\s+|a\s+|an\s+|most\s+)*" + _OBJ + r"\b", words):
        return False
    return bool(re.search(r"\b" + _OBJ + r"\b", words))


# --------------------------------------------------------------------------- passes


def _sub(
    pattern: re.Pattern[str],
    text: str,
    cat: str,
    found: set[str],
    repl: Callable[[re.Match[str]], str] | str = "",
) -> str:
    def _fn(m: re.Match[str]) -> str:
        out = repl(m) if callable(repl) else repl
        if out != m.group(0):
            found.add(cat)
        return out

    return pattern.sub(_fn, text)


def _age_repl(m: re.Match[str]) -> str:
    art = m.group("art")
    if not art:
        return ""
    nxt = m.string[m.end() : m.end() + 40].lstrip()[:1].lower()
    new = "an" if nxt and nxt in "aeiou" else "a"
    return (new.capitalize() if art[0].isupper() else new) + " "


def _time_repl(m: re.Match[str]) -> str:
    """ "at 3 p.m. Effusion." : the abbreviation's dot also ended the sentence; keep it."""
    ends_sentence = re.match(r"\s+[A-Z]|\s*$", m.string[m.end() : m.end() + 2])
    return "." if m.group(0).endswith(".") and ends_sentence else ""


def _url_repl(m: re.Match[str]) -> str:
    trail = re.search(r"[.,;:!?]+$", m.group(0))
    return trail.group(0) if trail else ""


def _sentences(text: str, found: set[str]) -> str:
    """Drop comparison/communication sentences and leading comparison clauses."""
    parts = _SENT_SPLIT.split(text)
    out: list[str] = []
    for i in range(0, len(parts), 2):
        sent, sep = parts[i], parts[i + 1] if i + 1 < len(parts) else ""
        if sent.strip():
            if _COMMUNICATION.search(sent):
                found.add("communication")
                numbered = re.match(r"\W*\d{1,2}\.", sent)
                sent = numbered.group(0) if numbered else ""
            elif lead := _COMPARISON_LEAD.match(sent):
                found.add("comparison")
                rest = sent[lead.end() :]
                sent = lead.group(1) + rest[:1].upper() + rest[1:]
            elif _COMPARISON_SENT.match(sent):
                found.add("comparison")
                sent = _after_comparison(sent)
        out.append(sent + sep)
    return "".join(out)


def _inline_comparison(m: re.Match[str]) -> str:
    return "" if _obj_is_prior(m.group(1)) else m.group(0)


_CLEAN = [
    (re.compile(r"[(\[][\s,;:/–-]*[)\]]"), ""),
    (
        re.compile(
            r"\b(?:on|at|of|dated|from|since|by|with|to|until|in)[ \t]*(?=[,.;:!?)]|$)", re.M
        ),
        "",
    ),
    (re.compile(r"(?m)(^|(?<=[.!?])[ \t]+)\d{1,2}\.[ \t]*(?=\d{1,2}\.[ \t]|$)"), r"\1"),
    (re.compile(r"(?<![ \t])[ \t]+(?=[,.;:!?)])"), ""),
    (re.compile(r"([,;:])[ \t]*(?:[,;:][ \t]*)+"), r"\1 "),
    (re.compile(r"[,;:][ \t]*(?=[.!?)]|$)", re.M), ""),
    (re.compile(r"(?m)^[ \t]*[,;:.]+[ \t]*"), ""),
    (re.compile(r"([.!?])[ \t]+[,;:]+"), r"\1"),
    (re.compile(r"\.[ \t]*\.(?!\.)"), "."),
    (re.compile(r"(?<=[.!?] )[-–][ \t]+"), ""),
    (re.compile(r"\([ \t]+"), "("),
    (re.compile(r"[ \t]{2,}"), " "),
    (re.compile(r"(?<![ \t])[ \t]+\n|\n[ \t]+"), "\n"),
    (re.compile(r"\n{3,}"), "\n\n"),
]


_SENT_START = re.compile(r"(?<!\.[a-z])([.!?][ \t]+)([a-z])")


def _clean(text: str, capitalised: bool) -> str:
    """Repair what removals leave behind: empty brackets, orphan prepositions and
    punctuation, double spaces, and sentences that lost their capitalised first word."""
    for _ in range(2):
        for pattern, repl in _CLEAN:
            text = pattern.sub(repl, text)
    text = _SENT_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
    text = text.strip(" \t\n,;:")
    if capitalised and text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


def _coerce(value: object, found: set[str]) -> str | None:
    """Text from whatever a reader hands over; junk never raises."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", errors="replace")
    if not isinstance(value, str):
        logger.warning("report text of type %s coerced to str", type(value).__name__)
        value = str(value)
    text = _SPACES.sub(" ", value.replace("\r\n", "\n").replace("\r", "\n"))
    if _CONTROL.search(text):
        found.add("control")
        text = _CONTROL.sub(" ", text)
    return text


def sanitize_text(text: str, found: set[str] | None = None) -> str | None:
    """Scrub one section's text; adds the categories it removed to ``found``."""
    found = set() if found is None else found
    capitalised = not text.lstrip()[:1].islower()
    text = _sub(_URL, _sub(_EMAIL, text, "email", found), "url", found, _url_repl)
    text = _sub(_PHONE, text, "phone", found)
    text = _sub(_DATE, text, "date", found)
    text = _sub(_TIME, text, "time", found, _time_repl)
    text = _sub(_AGE, text, "age", found, _age_repl)
    text = _sub(_NAME, text, "name", found)
    text = _sub(_ID, text, "id", found)
    text = _sentences(text, found)
    text = _sub(_COMPARISON_INLINE, text, "comparison", found, _inline_comparison)
    text = _sub(_PLACE, text, "place", found)
    text = _sub(_DEID, text, "deid_token", found, "XXXX")
    text = _clean(text, capitalised)
    return text or None


def sanitize_value(value: object) -> str | None:
    """One free-text value that is not a report (an extra manifest column on the
    ``--attributes`` allow-list), scrubbed like a report's findings: control characters,
    dates, ages, names, ids, contacts, places and comparison references go. A label
    ("COVID-19", "cardiomegaly;pleural_effusion") comes back unchanged. None when
    nothing is left."""
    found: set[str] = set()
    text = _coerce(value, found)
    return sanitize_text(text, found) if text and text.strip() else None


def sanitize_report(
    *, findings: object = None, impression: object = None, report: object = None
) -> SanitizedReport:
    """Sanitise a report given as sections, as a full text, or both.

    Explicit ``findings``/``impression`` win; ``report`` only fills the sections that
    were not given (its other sections are dropped). Never raises on junk input.
    """
    found: set[str] = set()
    f_text, i_text = _coerce(findings, found), _coerce(impression, found)
    full = _coerce(report, found)
    if full is not None and (f_text is None or i_text is None):
        rf, ri, dropped, comparison = split_sections(full)
        if dropped:
            found.add("section")
        if comparison:
            found.add("comparison")
        f_text = rf if f_text is None else f_text
        i_text = ri if i_text is None else i_text
    out_f = sanitize_text(f_text, found) if f_text else None
    out_i = sanitize_text(i_text, found) if i_text else None
    return SanitizedReport(out_f, out_i, tuple(c for c in CATEGORIES if c in found))
