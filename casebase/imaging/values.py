"""Parse and normalise the metadata values of one study (age, sex, modality, view, date, flags).

Every value that reaches the database goes through one of these functions, whatever its
source (a CSV manifest, a DICOM header), so that a filter such as ``sex => 'F'`` or
``modality = 'CXR'`` means the same thing for every batch. They are pure (no database, no
I/O) and raise :class:`casebase.errors.InputError` with a one-line reason when a value is
present but cannot be right, so that the row goes to the rejects table with that reason.
Missing values (``None``, ``""``, NaN, DICOM "unknown") are ``None``, never an error.

Coded vocabularies are the :class:`enum.StrEnum` members of
:mod:`casebase.imaging.vocabulary`; the functions return their ``str`` values so that
callers can store them directly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import re
from dataclasses import dataclass
from enum import StrEnum

from casebase.errors import InputError
from casebase.imaging.vocabulary import FLAG_PATTERN, MAX_AGE_YEARS, Modality, Sex, View

__all__ = [
    "DatePrecision",
    "PartialDate",
    "normalise_modality",
    "normalise_view",
    "parse_age",
    "parse_date",
    "parse_flags",
    "parse_partial_date",
    "parse_sex",
    "patient_key",
    "view_flags",
]

log = logging.getLogger(__name__)

_DAYS_PER_YEAR = 365.25


def _is_missing(value: object) -> bool:
    """``None``, blank strings and float NaN (pandas' missing value) all mean "not recorded"."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


# --------------------------------------------------------------------------------------- age

# DICOM AS is nnnD/W/M/Y; we also accept what real manifests contain: bare numbers ("62",
# the SIIM file), decimals ("0.5"), a space before the unit and spelt-out units ("62 years").
_AGE_RE = re.compile(
    r"^(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[DWMY]|DAYS?|WEEKS?|MONTHS?|YEARS?|YRS?|MOS?)?$"
)
_AGE_UNIT_YEARS = {"D": 1 / _DAYS_PER_YEAR, "W": 7 / _DAYS_PER_YEAR, "M": 1 / 12, "Y": 1.0}


def parse_age(value: object) -> float | None:
    """Age in years from a DICOM AS string (``062Y``, ``5M``, ``3W``, ``10D``) or a number.

    A bare number (``62``, non-standard but common: the SIIM file has it) is years. Months,
    weeks and days are converted so that paediatric filters work on one unit; the result is
    rounded to 4 decimals so that the same string always gives the same float.
    Missing → ``None``; negative or above :data:`MAX_AGE_YEARS` → ``InputError``.
    """
    if _is_missing(value):
        return None
    if isinstance(value, bool):  # bool is an int subclass: True is not an age
        raise InputError(f"invalid age {value!r}")
    if isinstance(value, int | float):
        years = float(value)
    else:
        text = str(value).strip().upper()
        if re.fullmatch(r"-\d+(?:\.\d+)?\s*[A-Z]*", text):
            raise InputError(f"impossible age '{str(value).strip()}'")
        match = _AGE_RE.match(text)
        if match is None:
            raise InputError(f"invalid age '{str(value).strip()}'")
        unit = (match["unit"] or "Y")[0]
        if match["unit"] in ("MO", "MOS"):
            unit = "M"
        years = float(match["num"]) * _AGE_UNIT_YEARS[unit]
    if math.isinf(years) or years < 0 or years > MAX_AGE_YEARS:
        shown = value if isinstance(value, str) else f"{value:g}"
        raise InputError(f"impossible age '{str(shown).strip()}'")
    return round(years, 4)


# --------------------------------------------------------------------------------------- sex


_SEX_WORDS = {
    "M": Sex.MALE, "MALE": Sex.MALE, "MAN": Sex.MALE, "BOY": Sex.MALE,
    "F": Sex.FEMALE, "FEMALE": Sex.FEMALE, "WOMAN": Sex.FEMALE, "GIRL": Sex.FEMALE,
    "O": Sex.OTHER, "OTHER": Sex.OTHER,
}  # fmt: skip
_SEX_UNKNOWN = {"U", "UNK", "UNKNOWN", "NA", "N/A", "NONE", "NULL", "?", "-"}


def parse_sex(value: object) -> str | None:
    """``"M"``, ``"F"`` or ``"O"`` from DICOM codes or words (case-insensitive).

    ``U``/unknown/blank → ``None`` (unknown is "not recorded", and filters treat it so);
    DICOM ``O`` (other) is a real value and is kept. Anything else (``X7``) is an error rather
    than a guess, because a wrong sex silently corrupts ``sex => 'F'`` searches.
    """
    if _is_missing(value):
        return None
    key = str(value).strip().upper()
    if key in _SEX_UNKNOWN:
        return None
    try:
        return _SEX_WORDS[key].value
    except KeyError:
        raise InputError(f"unknown sex code '{str(value).strip()}'") from None


# ---------------------------------------------------------------------------------- modality


# Lower-case, punctuation-stripped modality text → radiograph (None) or a fixed modality.
_RADIOGRAPH = {"cr", "dx", "dr", "rg", "xr", "x ray", "xray", "radiograph", "radiography",
               "plain film", "cxr", "kxr"}  # fmt: skip
_FIXED_MODALITY = {
    "ct": Modality.CT, "cat": Modality.CT, "computed tomography": Modality.CT,
    "mr": Modality.MR, "mri": Modality.MR, "magnetic resonance": Modality.MR,
    "us": Modality.US, "ultrasound": Modality.US, "ultrasonography": Modality.US,
    "mg": Modality.MG, "mammography": Modality.MG, "mammogram": Modality.MG,
    "nm": Modality.NM, "nuclear medicine": Modality.NM,
    "pt": Modality.PT, "pet": Modality.PT,
    "xa": Modality.XA, "rf": Modality.XA, "angiography": Modality.XA,
    "fluoroscopy": Modality.XA,
}  # fmt: skip
_CHEST_WORDS = re.compile(r"\b(chest|thorax|thoracic|lungs?|cxr|pulmonary|ribs?)\b")
_KNEE_WORDS = re.compile(r"\b(knees?|kxr|patella|patellar)\b")


def _words(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", " ", (text or "").lower()).strip()


def normalise_modality(
    modality: str | None, body_part: str | None = None, *, description: str | None = None
) -> str:
    """The :class:`Modality` value for a DICOM Modality (or free text such as ``X-ray``).

    Radiographs (CR, DX, DR, RG, XR, "X-ray") become CXR or KXR from the body part
    (``CHEST``, ``THORAX``, ``LUNG`` → CXR; ``KNEE`` → KXR), falling back to the
    ``description`` (study/series description, protocol) when the body part is not
    recorded, and to XR when neither names one. A ``CXR``/``KXR`` modality is accepted as
    is. Missing or unknown modality → ``InputError``: guessing would put an image in the
    wrong partition, where it would pollute every search.
    """
    if _is_missing(modality):
        raise InputError("missing modality")
    key = _words(modality)
    if key in _FIXED_MODALITY:
        return _FIXED_MODALITY[key].value
    if key == "cxr":
        return Modality.CXR.value
    if key == "kxr":
        return Modality.KXR.value
    if key not in _RADIOGRAPH:
        raise InputError(f"unknown modality '{str(modality).strip()}'")
    for text in (body_part, description):
        words = _words(text)
        if _CHEST_WORDS.search(words):
            return Modality.CXR.value
        if _KNEE_WORDS.search(words):
            return Modality.KXR.value
    return Modality.XR.value


# -------------------------------------------------------------------------------------- view


_VIEW_WORDS = {
    "pa": View.PA, "posteroanterior": View.PA, "postero anterior": View.PA,
    "ap": View.AP, "anteroposterior": View.AP, "antero posterior": View.AP,
    "ap erect": View.AP, "ap upright": View.AP, "ap portable": View.AP,
    "portable ap": View.AP, "ap bedside": View.AP,
    "ap supine": View.AP_SUPINE, "supine ap": View.AP_SUPINE, "ap_supine": View.AP_SUPINE,
    "supine": View.AP_SUPINE,
    "l": View.LATERAL, "ll": View.LATERAL, "rl": View.LATERAL, "lat": View.LATERAL,
    "lateral": View.LATERAL, "left lateral": View.LATERAL, "right lateral": View.LATERAL,
    "ml": View.LATERAL, "lm": View.LATERAL,
    "lld": View.DECUBITUS, "rld": View.DECUBITUS, "decubitus": View.DECUBITUS,
    "lateral decubitus": View.DECUBITUS,
    "rao": View.OBLIQUE, "lao": View.OBLIQUE, "rpo": View.OBLIQUE, "lpo": View.OBLIQUE,
    "rlo": View.OBLIQUE, "llo": View.OBLIQUE, "oblique": View.OBLIQUE, "obl": View.OBLIQUE,
    "axial": View.AXIAL, "ax": View.AXIAL, "transverse": View.AXIAL,
    "coronal": View.CORONAL, "cor": View.CORONAL,
    "sagittal": View.SAGITTAL, "sag": View.SAGITTAL,
    "cc": View.CC, "mlo": View.MLO,
}  # fmt: skip


def normalise_view(value: object) -> str | None:
    """The :class:`View` value for a DICOM View Position or a manifest's view column.

    ``AP Supine`` (the covid set's bedside film) is kept apart from ``AP``; ``L``, ``LL``,
    ``RL`` and ``LAT`` are all LATERAL. Missing → ``None``; unknown → ``InputError``, so
    that a new spelling is added here instead of silently becoming "no view".
    """
    if _is_missing(value):
        return None
    key = re.sub(r"[^a-z_]+", " ", str(value).lower()).strip()
    if key in _VIEW_WORDS:
        return _VIEW_WORDS[key].value
    raise InputError(f"unknown view '{str(value).strip()}'")


def view_flags(view: object) -> set[str]:
    """Acquisition flags implied by a view, raw (``AP portable``) or normalised (``AP_SUPINE``).

    A supine AP film is taken at the bedside, so it is ``portable`` (and ``supine``); the
    flags are filter columns so that an analyst can exclude ICU films.
    """
    if _is_missing(view):
        return set()
    words = set(re.sub(r"[^a-z]+", " ", str(view).lower()).split())
    flags: set[str] = set()
    if words & {"supine"}:
        flags |= {"portable", "supine"}
    if words & {"portable", "bedside", "mobile"}:
        flags.add("portable")
    if words & {"erect", "upright"}:
        flags.add("erect")
    if words & {"decubitus", "lld", "rld"}:
        flags.add("decubitus")
    return flags


# -------------------------------------------------------------------------------------- date


class DatePrecision(StrEnum):
    YEAR = "year"
    MONTH = "month"
    DAY = "day"


@dataclass(frozen=True)
class PartialDate:
    """A date known to the year, month or day (the covid set has all three)."""

    year: int
    month: int | None = None
    day: int | None = None

    @property
    def precision(self) -> DatePrecision:
        if self.day is not None:
            return DatePrecision.DAY
        return DatePrecision.MONTH if self.month is not None else DatePrecision.YEAR

    def as_date(self) -> dt.date | None:
        """The calendar date when it is known to the day, else ``None``."""
        if self.month is None or self.day is None:
            return None
        return dt.date(self.year, self.month, self.day)


_MONTHS = {
    name: number
    for number, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
         ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
         ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
         ("dec", "december")],
        start=1,
    )
    for name in names
}  # fmt: skip
_MONTH_RE = "(?P<month_name>[a-z]+)\\.?"
_DATE_PATTERNS = [
    re.compile(r"^(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})$"),  # DICOM DA
    re.compile(r"^(?P<year>\d{4})[-./](?P<month>\d{1,2})[-./](?P<day>\d{1,2})(?:[ t].*)?$"),
    re.compile(r"^(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<year>\d{4}|\d{2})$"),  # 3/7/2020
    re.compile(rf"^{_MONTH_RE}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<year>\d{{4}})$"),
    re.compile(rf"^(?P<day>\d{{1,2}})\s+{_MONTH_RE},?\s+(?P<year>\d{{4}})$"),  # 6 March 2020
    re.compile(rf"^{_MONTH_RE},?\s+(?P<year>\d{{4}})$"),  # March 2003
    re.compile(r"^(?P<year>\d{4})[-/](?P<month>\d{1,2})$"),  # 2020-03
    re.compile(r"^(?P<year>\d{4})$"),  # 2020
]
_MIN_YEAR = 1895  # Röntgen; DICOM's 19010101 placeholder is caught separately


def parse_partial_date(value: object) -> PartialDate | None:
    """A :class:`PartialDate` from DICOM ``YYYYMMDD``, ISO, US ``M/D/YYYY`` or ``M/D/YY``,
    ``March 10, 2020``, ``Mar 3, 2020``, ``March 2003`` or ``2020``; ``None`` otherwise.

    Slashed dates are month first (the covid set is American) unless the first number is
    above 12. Two-digit years are 20YY when that is not in the future, else 19YY.
    A date without a year (``January 12``) is ``None``: it cannot be placed in time.
    """
    if _is_missing(value):
        return None
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return PartialDate(value.year, value.month, value.day)
    text = str(value).strip().lower()
    for pattern in _DATE_PATTERNS:
        match = pattern.match(text)
        if match is None:
            continue
        parts = match.groupdict()
        year = int(parts["year"])
        if len(parts["year"]) == 2:
            year += 2000 if 2000 + year <= dt.date.today().year else 1900
        month: int | None
        day: int | None
        if "a" in parts:
            first, second = int(parts["a"]), int(parts["b"])
            month, day = (second, first) if first > 12 else (first, second)
        else:
            day = int(parts["day"]) if parts.get("day") else None
            month = int(parts["month"]) if parts.get("month") else None
        if parts.get("month_name"):
            month = _MONTHS.get(parts["month_name"])
            if month is None:
                return None
        if year < _MIN_YEAR or year > dt.date.today().year + 1:
            return None
        if month is not None and not 1 <= month <= 12:
            return None
        if day is not None:
            try:
                dt.date(year, month or 1, day)
            except ValueError:
                return None
        return PartialDate(year, month, day)
    return None


def parse_date(value: object, *, strict: bool = False) -> dt.date | None:
    """The study date when it is known to the day, else ``None``.

    A study date is optional metadata: an image with a vague or garbled date is still a
    good case, so by default nothing here rejects a row. Year-only and month-only values
    (``2020``, ``March 2003``, half of the covid set) are ``None`` rather than a made-up
    1 January; :func:`parse_partial_date` keeps them. DICOM's ``19010101`` placeholder
    (the SIIM file) is ``None``. With ``strict=True`` a value that is present but not a
    full date raises ``InputError`` instead.
    """
    partial = parse_partial_date(value)
    date = partial.as_date() if partial is not None else None
    if date is not None and date == dt.date(1901, 1, 1):
        log.debug("ignoring placeholder study date %r", value)
        date = None
    if date is None and strict and not _is_missing(value):
        raise InputError(f"invalid date '{str(value).strip()}'")
    return date


# ------------------------------------------------------------------------------------- flags


def parse_flags(value: str | None) -> tuple[str, ...]:
    """Flags from a ``;``-separated string, as sorted, unique lower-case snake tokens.

    ``"Burned-in text; portable"`` → ``("burned_in_text", "portable")``. A token that is
    not ``[a-z][a-z0-9_]*`` (at most 64 characters) after normalisation is an error: flags
    are filter values, and a typo would silently never match.
    """
    if _is_missing(value):
        return ()
    flags: set[str] = set()
    for raw in str(value).split(";"):
        token = re.sub(r"[\s\-/.]+", "_", raw.strip().lower()).strip("_")
        if not token:
            continue
        if not FLAG_PATTERN.match(token):
            raise InputError(f"invalid flag '{raw.strip()}'")
        flags.add(token)
    return tuple(sorted(flags))


# ------------------------------------------------------------------------------- patient key


def patient_key(patient_id: str, salt: str) -> str:
    """A stable pseudonym for a patient: HMAC-SHA256(salt, id), hex, first 32 characters.

    Only the key is stored, never the raw id; it still lets searches exclude the query
    patient's own studies and lets evaluation split by patient. The salt is a secret of the
    deployment (without it, ids such as MRNs could be recovered by hashing every candidate),
    so an empty salt is refused. HMAC is the keyed form of a salted hash and avoids
    ambiguity between salt and id boundaries.
    """
    if not salt:
        raise InputError("patient key salt is empty")
    if _is_missing(patient_id):
        raise InputError("missing patient id")
    digest = hmac.new(salt.encode(), str(patient_id).strip().encode(), hashlib.sha256)
    return digest.hexdigest()[:32]
