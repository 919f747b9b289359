"""Search filters: one small value object, validated before any SQL runs."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from casebase.errors import QueryError
from casebase.imaging.vocabulary import FLAG_PATTERN, MAX_AGE_YEARS, MODALITY_CODE_PATTERN, Sex

_SEXES = tuple(Sex)
_SEX_CHOICES = sorted(Sex)  # F, M, O


@dataclass(frozen=True)
class Filters:
    """What a neighbour must satisfy; applied inside the vector scan, in one SQL statement."""

    modality: str | None = None
    sex: str | None = None
    age: tuple[float | None, float | None] | None = None
    views: tuple[str, ...] | None = None
    exclude_flags: tuple[str, ...] = ()
    require_flags: tuple[str, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    batches: tuple[str, ...] | None = None
    attributes: dict[str, str] | None = None
    exclude_same_patient: bool = True

    def __post_init__(self) -> None:
        if self.modality is not None and not MODALITY_CODE_PATTERN.match(self.modality):
            raise QueryError(f"unknown modality {self.modality!r} (e.g. CXR, KXR, CT)")
        if self.sex is not None and self.sex not in _SEXES:
            choices = f"{', '.join(_SEX_CHOICES[:-1])} or {_SEX_CHOICES[-1]}"
            raise QueryError(f"sex must be {choices}, got {self.sex!r}")
        if self.age is not None:
            low, high = self.age
            for value in (low, high):
                if value is not None and not 0 <= value <= MAX_AGE_YEARS:
                    raise QueryError(f"age {value} is outside 0-{MAX_AGE_YEARS:g}")
            if low is not None and high is not None and low > high:
                raise QueryError(f"impossible age range {low:g}-{high:g}")
        for flag in (*self.exclude_flags, *self.require_flags):
            if not FLAG_PATTERN.match(flag):
                raise QueryError(f"invalid flag {flag!r} (lower-case letters, digits, _)")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise QueryError(f"impossible date range {self.date_from} to {self.date_to}")

    def describe(self) -> dict[str, object]:
        """The filters that are set, for briefs and logs."""
        out = {k: v for k, v in asdict(self).items() if v not in (None, (), {})}
        if not self.exclude_same_patient:
            out["exclude_same_patient"] = False
        else:
            out.pop("exclude_same_patient", None)
        return out


def parse_age_range(text: str | None) -> tuple[float | None, float | None] | None:
    """``"40-60"``, ``"40-"``, ``"-60"`` or ``"65"`` → (low, high)."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    try:
        if "-" in text:
            low, high = text.split("-", 1)
            return (float(low) if low.strip() else None, float(high) if high.strip() else None)
        return (float(text), float(text))
    except ValueError:
        raise QueryError(f"age range must look like 40-60, got {text!r}") from None


def parse_date(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"dates must be YYYY-MM-DD, got {text!r}") from None
