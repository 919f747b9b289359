"""A folder of DICOM files as a plan of studies (one study per StudyInstanceUID).

Reading one file is :mod:`casebase.imaging.dicom`'s job; what is about a folder as an
ingest batch is here: which files are DICOM, rejects that do not stop the scan, and the
text of a study's Structured Reports attached to its images.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.errors import InputError
from casebase.imaging.files import has_dicom_preamble
from casebase.ingest.manifest import SourceRow
from casebase.ingest.studies import Plan, Reject, plan_rows

if TYPE_CHECKING:
    from casebase.imaging.dicom import DicomRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomFolder:
    """What :func:`read_dicom_folder` found: image records, and (path, reason) rejects."""

    records: tuple[DicomRecord, ...]
    rejects: tuple[tuple[Path, str], ...]


def is_dicom_file(path: str | Path) -> bool:
    """True for a regular file with the DICM preamble (the extension is not trusted)."""
    path = Path(path)
    return path.is_file() and has_dicom_preamble(path)


def iter_dicom_files(folder: str | Path) -> Iterator[Path]:
    """Every DICOM file under ``folder``, recursively, in sorted (reproducible) order."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    for path in sorted(root.rglob("*")):
        if is_dicom_file(path):
            yield path


def read_dicom_folder(folder: str | Path) -> DicomFolder:
    """Headers of every DICOM under ``folder``, with SR report text attached by study.

    A bad file is a reject (path, reason), never the end of the scan. An image whose
    ``report_text`` is already set (sibling ``.txt``) keeps it; otherwise it gets the text of
    its study's SRs (joined, in path order).
    """
    from casebase.imaging.dicom import DicomReport, read_dicom

    records: list[DicomRecord] = []
    rejects: list[tuple[Path, str]] = []
    reports: dict[str, list[str]] = {}
    for path in iter_dicom_files(folder):
        try:
            found = read_dicom(path)
        except InputError as exc:
            log.info("rejected %s: %s", path, exc)
            rejects.append((path, str(exc)))
            continue
        if isinstance(found, DicomReport):
            reports.setdefault(found.study_id, []).append(found.text)
        else:
            records.append(found)
    merged = tuple(
        dataclasses.replace(r, report_text="\n\n".join(reports[r.study_id]))
        if r.report_text is None and r.study_id in reports
        else r
        for r in records
    )
    return DicomFolder(records=merged, rejects=tuple(rejects))


def plan_dicom_folder(folder: str | Path) -> Plan:
    found = read_dicom_folder(folder)
    root = Path(folder)
    rows = []
    for rec in found.records:
        rel = str(rec.path.relative_to(root)) if rec.path.is_relative_to(root) else str(rec.path)
        fields = {
            "study_id": rec.study_id,
            "image_path": str(rec.path),
            "patient_id": rec.patient_id or "",
            "modality": rec.modality,
            "body_part": rec.body_part or "",
            "view": rec.view or "",
            "age": "" if rec.age is None else repr(rec.age),
            "sex": rec.sex or "",
            "study_date": rec.study_date.isoformat() if rec.study_date else "",
            "flags": ";".join(rec.flags),
            "report": rec.report_text or "",
        }
        attributes = {"modality_raw": rec.modality_raw, "sop_uid": rec.sop_uid}
        if rec.accession:
            fields["accession"] = rec.accession
        rows.append(
            SourceRow(str(root), rel, {k: v for k, v in fields.items() if v}, attributes, Path("/"))
        )
    plan = plan_rows(rows)
    rejects = [
        Reject(str(root), str(p.relative_to(root)), None, reason) for p, reason in found.rejects
    ]
    for study in plan.studies:
        study.accession = next(
            (r.fields.get("accession") for r in rows if r.fields["study_id"] == study.study_id),
            None,
        )
    return Plan(plan.studies, rejects + plan.rejects)
