"""From source rows to validated studies, or to rejects with a one-line reason.

Several rows with one ``study_id`` are several images of one study; they must
agree on the study's own values (patient, age, sex, modality, date), otherwise
the whole study is rejected rather than loaded with a guess. The reason names the
column and the rows that disagree, never their values (a patient id or a date is
private, and ``casebase.rejects`` is read by analysts). Each row's values are checked
by :mod:`casebase.ingest.validate`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from casebase.errors import InputError
from casebase.imaging.limits import display
from casebase.ingest.manifest import SourceRow
from casebase.ingest.validate import row_values, study_id_of


@dataclass(frozen=True)
class Reject:
    source: str
    row_ref: str
    study_id: str | None
    reason: str


@dataclass(frozen=True)
class ImageInput:
    path: Path
    source: str
    row_ref: str
    view: str | None
    flags: tuple[str, ...]


@dataclass
class StudyInput:
    study_id: str
    patient_id: str | None
    modality: str
    body_part: str | None
    view: str | None
    age: float | None
    sex: str | None
    study_date: date | None
    flags: tuple[str, ...]
    findings: str | None
    impression: str | None
    report: str | None
    accession: str | None
    attributes: dict[str, str]  # shown to analysts: allow-listed and sanitised
    images: list[ImageInput] = field(default_factory=list)
    raw_attributes: dict[str, str] = field(default_factory=dict)  # every extra, as received

    def metadata_digest(self) -> dict:
        """The study's own values, for the content hash (images are added by the loader).

        Extra columns count as received (``raw_attributes``): what a study *is* does not
        depend on which of them ``--attributes`` shows, and hashes of studies loaded
        before the allow-list existed stay the same."""
        return {
            "patient_id": self.patient_id,
            "modality": self.modality,
            "body_part": self.body_part,
            "view": self.view,
            "age": self.age,
            "sex": self.sex,
            "study_date": self.study_date.isoformat() if self.study_date else None,
            "flags": sorted(self.flags),
            "findings": self.findings,
            "impression": self.impression,
            "report": self.report,
            "attributes": self.raw_attributes,
        }


def content_sha256(study: StudyInput, image_hashes: list[str]) -> str:
    payload = {**study.metadata_digest(), "images": sorted(image_hashes)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class Plan:
    studies: list[StudyInput]
    rejects: list[Reject]


_MUST_AGREE = ("patient_id", "modality", "age", "sex", "study_date")


def _reject(row: SourceRow, study_id: str | None, reason: str) -> Reject:
    return Reject(row.source, display(row.row_ref, 1000), study_id, reason)


def plan_rows(rows: list[SourceRow]) -> Plan:
    """Validate rows and group them into studies, in first-seen order."""
    studies: dict[str, StudyInput] = {}
    first_row: dict[str, str] = {}
    rejects: list[Reject] = []
    bad_studies: dict[str, str] = {}
    seen_images: dict[tuple[str, str], str] = {}
    for row in rows:
        try:
            study_id = study_id_of(row)
        except InputError as exc:  # an id that cannot be stored cannot name the reject either
            rejects.append(_reject(row, None, str(exc)))
            continue
        if study_id in bad_studies:
            rejects.append(_reject(row, study_id, bad_studies[study_id]))
            continue
        try:
            checked = row_values(row)
        except InputError as exc:
            rejects.append(_reject(row, study_id, str(exc)))
            # A study loads whole or not at all: its other rows, before and after, go too.
            bad_studies[study_id] = "not loaded: another row of this study was rejected"
            dropped = studies.pop(study_id, None)
            for img in dropped.images if dropped else []:
                rejects.append(Reject(img.source, img.row_ref, study_id, bad_studies[study_id]))
            continue
        vals = checked.study
        key = (study_id, str(checked.image))
        if key in seen_images:
            reason = f"duplicate row: same study and image as {seen_images[key]}"
            rejects.append(_reject(row, study_id, reason))
            continue
        seen_images[key] = row.row_ref
        image = ImageInput(
            path=checked.image,
            source=row.source,
            row_ref=display(row.row_ref, 1000),
            view=vals["view"],
            flags=vals["flags"],
        )
        existing = studies.get(study_id)
        if existing is None:
            studies[study_id] = StudyInput(
                study_id=study_id,
                accession=checked.accession,
                attributes=checked.attributes,
                raw_attributes=checked.raw_attributes,
                images=[image],
                **vals,
            )
            first_row[study_id] = image.row_ref
            continue
        conflict = next(
            (n for n in _MUST_AGREE if vals[n] is not None and getattr(existing, n) != vals[n]),
            None,
        )
        if conflict:
            reason = (
                f"rows of study {study_id} disagree on {conflict} "
                f"({first_row[study_id]} and {image.row_ref})"
            )
            bad_studies[study_id] = reason
            for img in existing.images:
                rejects.append(Reject(img.source, img.row_ref, study_id, reason))
            rejects.append(_reject(row, study_id, reason))
            del studies[study_id]
            continue
        existing.images.append(image)
        existing.flags = tuple(sorted(set(existing.flags) | set(vals["flags"])))
        for name in ("findings", "impression", "report"):
            if not getattr(existing, name) and vals[name]:
                setattr(existing, name, vals[name])
    return Plan(list(studies.values()), rejects)
