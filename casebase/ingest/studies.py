"""From source rows to validated studies, or to rejects with a one-line reason.

Several rows with one ``study_id`` are several images of one study; they must
agree on the study's own values (patient, age, sex, modality, date), otherwise
the whole study is rejected rather than loaded with a guess.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from casebase.errors import InputError
from casebase.imaging import values
from casebase.ingest.manifest import SourceRow


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
    attributes: dict[str, str]
    images: list[ImageInput] = field(default_factory=list)

    def metadata_digest(self) -> dict:
        """The study's own values, for the content hash (images are added by the loader)."""
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
            "attributes": self.attributes,
        }


def content_sha256(study: StudyInput, image_hashes: list[str]) -> str:
    payload = {**study.metadata_digest(), "images": sorted(image_hashes)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class Plan:
    studies: list[StudyInput]
    rejects: list[Reject]


def _study_values(row: SourceRow) -> dict:
    f = row.fields
    view = values.normalise_view(f.get("view"))
    flags = set(values.parse_flags(f.get("flags"))) | values.view_flags(f.get("view"))
    return {
        "patient_id": f.get("patient_id"),
        "modality": values.normalise_modality(f.get("modality"), f.get("body_part")),
        "body_part": (f.get("body_part") or None) and f["body_part"].upper(),
        "view": view,
        "age": values.parse_age(f.get("age")),
        "sex": values.parse_sex(f.get("sex")),
        "study_date": values.parse_date(f.get("study_date")),
        "flags": tuple(sorted(flags)),
        "findings": f.get("findings"),
        "impression": f.get("impression"),
        "report": f.get("report"),
    }


_MUST_AGREE = ("patient_id", "modality", "age", "sex", "study_date")


def plan_rows(rows: list[SourceRow]) -> Plan:
    """Validate rows and group them into studies, in first-seen order."""
    studies: dict[str, StudyInput] = {}
    rejects: list[Reject] = []
    bad_studies: dict[str, str] = {}
    seen_images: dict[tuple[str, str], str] = {}
    for row in rows:
        study_id = row.fields.get("study_id", "").strip()
        if not study_id:
            rejects.append(Reject(row.source, row.row_ref, None, "missing study_id"))
            continue
        image_path = row.fields.get("image_path", "").strip()
        if not image_path:
            rejects.append(Reject(row.source, row.row_ref, study_id, "missing image_path"))
            continue
        if study_id in bad_studies:
            rejects.append(Reject(row.source, row.row_ref, study_id, bad_studies[study_id]))
            continue
        try:
            vals = _study_values(row)
        except InputError as exc:
            rejects.append(Reject(row.source, row.row_ref, study_id, str(exc)))
            # A study loads whole or not at all: its other rows, before and after, go too.
            bad_studies[study_id] = "not loaded: another row of this study was rejected"
            dropped = studies.pop(study_id, None)
            for img in dropped.images if dropped else []:
                rejects.append(Reject(img.source, img.row_ref, study_id, bad_studies[study_id]))
            continue
        key = (study_id, image_path)
        if key in seen_images:
            rejects.append(
                Reject(
                    row.source,
                    row.row_ref,
                    study_id,
                    f"duplicate row: same study and image as {seen_images[key]}",
                )
            )
            continue
        seen_images[key] = row.row_ref
        image = ImageInput(
            path=(row.base_dir / image_path),
            source=row.source,
            row_ref=row.row_ref,
            view=vals["view"],
            flags=vals["flags"],
        )
        existing = studies.get(study_id)
        if existing is None:
            studies[study_id] = StudyInput(
                study_id=study_id,
                accession=row.fields.get("accession"),
                attributes=dict(row.attributes),
                images=[image],
                **vals,
            )
            continue
        conflict = next(
            (n for n in _MUST_AGREE if vals[n] is not None and getattr(existing, n) != vals[n]),
            None,
        )
        if conflict:
            reason = (
                f"rows of study {study_id} disagree on {conflict} "
                f"({getattr(existing, conflict)!r} vs {vals[conflict]!r})"
            )
            bad_studies[study_id] = reason
            for img in existing.images:
                rejects.append(Reject(img.source, img.row_ref, study_id, reason))
            rejects.append(Reject(row.source, row.row_ref, study_id, reason))
            del studies[study_id]
            continue
        existing.images.append(image)
        existing.flags = tuple(sorted(set(existing.flags) | set(vals["flags"])))
        for name in ("findings", "impression", "report"):
            if not getattr(existing, name) and vals[name]:
                setattr(existing, name, vals[name])
    return Plan(list(studies.values()), rejects)
