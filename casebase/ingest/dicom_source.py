"""A folder of DICOM files as a plan of studies (one study per StudyInstanceUID)."""

from __future__ import annotations

from pathlib import Path

from casebase.ingest.manifest import SourceRow
from casebase.ingest.studies import Plan, Reject, plan_rows


def plan_dicom_folder(folder: str | Path) -> Plan:
    from casebase.imaging.dicom import read_dicom_folder

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
