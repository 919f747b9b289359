"""One source row checked value by value, before anything of it is written.

Every value that will be written is checked here against the limits and character rules
of :mod:`casebase.imaging.limits`, parsed by :mod:`casebase.imaging.values`, and the image
path is kept inside its root (:mod:`casebase.imaging.paths`). A bad value raises
``InputError`` with a one-line reason that names the column and the problem, and the row
(with its study) becomes a reject; so the COPY that follows never meets a value
PostgreSQL refuses, and one bad cell costs one study, not a chunk.

Reasons quote a value only from the coded columns (age, sex, view, modality, flags,
date: "unknown sex code 'X7'"), never from the patient id, the report or an extra column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from casebase.errors import InputError
from casebase.imaging import limits, values
from casebase.imaging.paths import confine
from casebase.ingest.manifest import SourceRow

__all__ = ["RowValues", "row_values", "study_id_of"]

_CODES = ("modality", "body_part", "view", "age", "sex", "study_date")
_REPORT = ("findings", "impression", "report")


@dataclass(frozen=True)
class RowValues:
    """A row's checked values: the study's own (``study``), its image, its attributes."""

    image: Path
    study: dict
    attributes: dict[str, str]
    raw_attributes: dict[str, str]
    accession: str | None


def study_id_of(row: SourceRow) -> str:
    """The row's study id, checked: it keys the study and sits in B-tree entries."""
    study_id = row.fields.get("study_id", "").strip()
    if not study_id:
        raise InputError("missing study_id")
    return limits.check_code("study_id", study_id, limits.ID_MAX)


def _flags(raw: str | None, view: str | None) -> tuple[str, ...]:
    if raw:
        limits.check_code("flags", raw, len(raw))  # characters here, lengths per flag
        tokens = [t.strip() for t in raw.split(";") if t.strip()]
        limits.check_count("flags", len(tokens), limits.FLAGS_MAX)
        for n, token in enumerate(tokens, start=1):
            limits.check_code(f"flag {n}", token, limits.CODE_MAX)
    parsed = values.parse_flags(raw)
    return tuple(sorted(set(parsed) | values.view_flags(view)))


def _attributes(row: SourceRow) -> tuple[dict[str, str], dict[str, str]]:
    """(published, raw): every extra value checked; the published ones sanitised."""
    from casebase.ingest.sanitize import sanitize_value

    for key, value in row.raw_attributes.items():
        column = f"column {limits.display(key, limits.ATTRIBUTE_KEY_MAX)}"
        limits.check_text(column, value, limits.ATTRIBUTE_VALUE_MAX)
    published = {}
    for key, value in row.attributes.items():
        limits.check_text(f"column {key}", value, limits.ATTRIBUTE_VALUE_MAX)
        clean = sanitize_value(value)
        if clean is not None:
            published[key] = clean
    return published, dict(row.raw_attributes)


def _image(row: SourceRow) -> Path:
    image_path = row.fields.get("image_path", "").strip()
    if not image_path:
        raise InputError("missing image_path")
    limits.check_code("image_path", image_path, limits.PATH_MAX)
    if row.confined:
        return confine(row.base_dir, image_path)
    return row.base_dir / image_path


def row_values(row: SourceRow) -> RowValues:
    """Check and parse every value of ``row`` (its study id is checked by
    :func:`study_id_of`). Raises ``InputError`` with the first problem found."""
    if row.problem:
        raise InputError(row.problem)
    f = row.fields
    for name in _CODES:
        if f.get(name):
            limits.check_code(name, f[name])
    for name in ("patient_id", "accession"):
        if f.get(name):
            limits.check_code(name, f[name], limits.ID_MAX)
    for name in _REPORT:
        if f.get(name):
            limits.check_text(name, f[name], limits.REPORT_MAX)
    attributes, raw_attributes = _attributes(row)
    image = _image(row)
    study_date: date | None = values.parse_date(f.get("study_date"))
    study = {
        "patient_id": f.get("patient_id"),
        "modality": values.normalise_modality(f.get("modality"), f.get("body_part")),
        "body_part": (f.get("body_part") or None) and f["body_part"].upper(),
        "view": values.normalise_view(f.get("view")),
        "age": values.parse_age(f.get("age")),
        "sex": values.parse_sex(f.get("sex")),
        "study_date": study_date,
        "flags": _flags(f.get("flags"), f.get("view")),
        "findings": f.get("findings"),
        "impression": f.get("impression"),
        "report": f.get("report"),
    }
    return RowValues(image, study, attributes, raw_attributes, f.get("accession"))
