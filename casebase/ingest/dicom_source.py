"""A folder of DICOM files as a plan of studies (one study per StudyInstanceUID).

Reading one file is :mod:`casebase.imaging.dicom`'s job; what is about a folder as an
ingest batch is here: which files are DICOM, rejects that do not stop the scan, and the
text of a study's Structured Reports attached to its images.

The walk stays inside the folder: a symlink (to a file or a folder) that leads out is a
reject ("leads outside the images root"), decided before anything outside is opened;
symlinked folders inside it are not walked twice. ``confined=False``
(``--allow-outside-root``) follows symlinks wherever they go.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.errors import InputError
from casebase.imaging.files import has_dicom_preamble
from casebase.imaging.limits import display
from casebase.imaging.paths import OutsideRootError, confine
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


def _confined_files(root: Path, outside: list[tuple[Path, str]]) -> list[Path]:
    """Files under ``root`` (not following symlinked folders); a symlink that leads out
    goes to ``outside`` with its reason, one that stays in is replaced by its target."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            if not path.is_symlink():
                if name in filenames:
                    found.append(path)
                continue
            try:
                target = confine(root, path.relative_to(root), what="file")
            except OutsideRootError as exc:
                outside.append((path, str(exc)))
                continue
            if name in filenames:
                found.append(target)
    return sorted(found)


def iter_dicom_files(
    folder: str | Path,
    *,
    confined: bool = True,
    outside: list[tuple[Path, str]] | None = None,
) -> Iterator[Path]:
    """Every DICOM file under ``folder``, recursively, in sorted (reproducible) order.

    With ``confined`` (the default), symlinks that lead outside ``folder`` are never
    opened: they are appended to ``outside`` as (path, reason)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    if confined:
        paths = _confined_files(root, [] if outside is None else outside)
    else:
        paths = sorted(root.rglob("*"))
    for path in paths:
        if is_dicom_file(path):
            yield path


def read_dicom_folder(folder: str | Path, *, confined: bool = True) -> DicomFolder:
    """Headers of every DICOM under ``folder``, with SR report text attached by study.

    A bad file is a reject (path, reason), never the end of the scan. An image whose
    ``report_text`` is already set (sibling ``.txt``) keeps it; otherwise it gets the text of
    its study's SRs (joined, in path order).
    """
    from casebase.imaging.dicom import DicomReport, read_dicom

    records: list[DicomRecord] = []
    rejects: list[tuple[Path, str]] = []
    reports: dict[str, list[str]] = {}
    outside: list[tuple[Path, str]] = []
    for path in iter_dicom_files(folder, confined=confined, outside=outside):
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
    return DicomFolder(records=merged, rejects=tuple(outside + rejects))


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the folder as given or as resolved; absolute when outside
    (only with ``confined=False``)."""
    for base in (root, Path(os.path.realpath(root))):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def plan_dicom_folder(folder: str | Path, *, confined: bool = True) -> Plan:
    found = read_dicom_folder(folder, confined=confined)
    root = Path(folder)
    rows = []
    for rec in found.records:
        rel = _relative(rec.path, root)
        fields = {
            "study_id": rec.study_id,
            "image_path": rel,
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
        # The instance UID identifies a file in a PACS: kept, but only in the restricted
        # table (the study id is already the study's UID).
        raw_attributes = {"modality_raw": rec.modality_raw, "sop_uid": rec.sop_uid}
        if rec.accession:
            fields["accession"] = rec.accession
        rows.append(
            SourceRow(
                str(root),
                rel,
                {k: v for k, v in fields.items() if v},
                {"modality_raw": rec.modality_raw},
                root,
                raw_attributes=raw_attributes,
                confined=confined,
            )
        )
    plan = plan_rows(rows)
    rejects = [
        Reject(str(root), display(_relative(p, root), 1000), None, reason)
        for p, reason in found.rejects
    ]
    for study in plan.studies:
        study.accession = next(
            (r.fields.get("accession") for r in rows if r.fields["study_id"] == study.study_id),
            None,
        )
    return Plan(plan.studies, rejects + plan.rejects)
