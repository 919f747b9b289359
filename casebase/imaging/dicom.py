"""Read DICOM headers: an image's metadata into a :class:`DicomRecord`, a Structured
Report's text into a :class:`DicomReport`.

A DICOM Structured Report has no pixels: it carries the report text of its study
(:func:`read_dicom_report`); ingest attaches it to the study's images
(:mod:`casebase.ingest.dicom_source`). The pixels are read by
:mod:`casebase.imaging.dicom_pixels`. Every failure is an
:class:`~casebase.errors.InputError` with a one-line reason for the rejects table.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from casebase.errors import InputError
from casebase.imaging import values

__all__ = [
    "DicomRecord",
    "DicomReport",
    "is_structured_report",
    "read_dataset",
    "read_dicom",
    "read_dicom_header",
    "read_dicom_report",
    "tag_text",
]

log = logging.getLogger(__name__)

_SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # all Structured Report storage classes
_SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture (and .7.1-.7.4 multi-frame)
_DESCRIPTION_TAGS = ("StudyDescription", "SeriesDescription", "ProtocolName")


@dataclass(frozen=True)
class DicomRecord:
    """One DICOM image's metadata, normalised with :mod:`casebase.imaging.values`.

    ``patient_id`` and ``accession`` are raw identifiers: they belong only in the restricted
    raw table (the shared views carry :func:`~casebase.imaging.values.patient_key` instead).
    """

    path: Path
    study_id: str
    series_uid: str | None
    sop_uid: str
    patient_id: str | None
    age: float | None
    sex: str | None
    modality: str
    modality_raw: str
    body_part: str | None
    view: str | None
    study_date: dt.date | None
    accession: str | None
    report_text: str | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class DicomReport:
    """The text of a DICOM Structured Report, keyed by the study it reports on."""

    path: Path
    study_id: str
    sop_uid: str
    text: str


# ------------------------------------------------------------------------------------ files


def read_dataset(path: Path, *, stop_before_pixels: bool) -> Dataset:
    """``dcmread`` with pydicom's exceptions and truncation warnings as ``InputError``.

    pydicom reads a truncated file with only a warning, dropping the cut element (a cut
    Pixel Data element would then look like "no pixel data"), so those warnings are errors.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        for warning in caught:
            message = str(warning.message)
            if "end of file" in message.lower():
                raise InputError(f"truncated or corrupt DICOM ({path.name}: {message})")
            log.debug("%s: %s", path, message)
        return ds
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except InvalidDicomError as exc:
        raise InputError(f"not a DICOM file ({path.name}: {exc})") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"truncated or corrupt DICOM ({path.name}: {exc})") from exc


def tag_text(ds: Dataset, keyword: str) -> str | None:
    """A tag's value as stripped text; ``None`` when it is absent or blank."""
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# ----------------------------------------------------------------------------------- header


def is_structured_report(ds: Dataset) -> bool:
    """True for a DICOM SR (by modality or SOP class): a report carrier, not an image."""
    sop_class = str(ds.get("SOPClassUID", ""))
    return tag_text(ds, "Modality") == "SR" or sop_class.startswith(_SR_SOP_CLASS_PREFIX)


def _age(ds: Dataset) -> float | None:
    """PatientAge, or StudyDate − PatientBirthDate when the age is not recorded."""
    age = values.parse_age(tag_text(ds, "PatientAge"))
    if age is not None:
        return age
    birth = values.parse_date(tag_text(ds, "PatientBirthDate"))
    study = values.parse_date(tag_text(ds, "StudyDate"))
    if birth is None or study is None:
        return None
    return values.parse_age(round((study - birth).days / 365.25, 4))


def _sibling_report(path: Path) -> str | None:
    """Report text from ``<stem>.txt`` beside the DICOM file, if there is one."""
    txt = path.with_suffix(".txt")
    if not txt.is_file():
        return None
    data = txt.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.strip() or None


def read_dicom(path: str | Path) -> DicomRecord | DicomReport:
    """An image's :class:`DicomRecord` or, for a Structured Report, its :class:`DicomReport`.

    One read of the header for a file whose kind is not known yet (a folder scan), where
    :func:`read_dicom_header` and :func:`read_dicom_report` would reject the other kind.
    """
    path = Path(path)
    ds = read_dataset(path, stop_before_pixels=True)
    return _report(path, ds) if is_structured_report(ds) else _record(path, ds)


def read_dicom_header(path: str | Path) -> DicomRecord:
    """The :class:`DicomRecord` of an image DICOM file, read without its pixels.

    Values are normalised (so an impossible age or unknown modality raises ``InputError``
    for the rejects table). ``report_text`` comes from a ``.txt`` file with the same stem;
    SR reports of the same study are attached by ingest's folder scan. Flags: the view's
    (``portable``, ``supine``…), ``burned_in_annotation`` when the header says so, and
    ``derived`` for secondary captures and derived images (processed, possibly annotated).
    """
    path = Path(path)
    return _record(path, read_dataset(path, stop_before_pixels=True))


def _record(path: Path, ds: Dataset) -> DicomRecord:
    if is_structured_report(ds):
        raise InputError(f"DICOM is a structured report, not an image: {path.name}")
    study_id = tag_text(ds, "StudyInstanceUID")
    sop_uid = tag_text(ds, "SOPInstanceUID")
    if study_id is None or sop_uid is None:
        raise InputError(f"DICOM lacks StudyInstanceUID or SOPInstanceUID: {path.name}")
    body_part = tag_text(ds, "BodyPartExamined")
    description = " ".join(filter(None, (tag_text(ds, tag) for tag in _DESCRIPTION_TAGS)))
    modality_raw = tag_text(ds, "Modality") or ""
    view_raw = tag_text(ds, "ViewPosition")

    flags = values.view_flags(view_raw)
    if (tag_text(ds, "BurnedInAnnotation") or "").upper() == "YES":
        flags.add("burned_in_annotation")
    image_type = [str(v).upper() for v in ds.get("ImageType") or []]
    sop_class = str(ds.get("SOPClassUID", ""))
    if (
        "DERIVED" in image_type
        or sop_class == _SC_SOP_CLASS
        or sop_class.startswith(_SC_SOP_CLASS + ".")
    ):
        flags.add("derived")

    return DicomRecord(
        path=path,
        study_id=study_id,
        series_uid=tag_text(ds, "SeriesInstanceUID"),
        sop_uid=sop_uid,
        patient_id=tag_text(ds, "PatientID"),
        age=_age(ds),
        sex=values.parse_sex(tag_text(ds, "PatientSex")),
        modality=values.normalise_modality(modality_raw, body_part, description=description),
        modality_raw=modality_raw,
        body_part=body_part,
        view=values.normalise_view(view_raw),
        study_date=values.parse_date(tag_text(ds, "StudyDate")),
        accession=tag_text(ds, "AccessionNumber"),
        report_text=_sibling_report(path),
        flags=values.parse_flags(";".join(sorted(flags))),
    )


# ----------------------------------------------------------------------------------- report


def _sr_lines(items: Any, heading: str | None, out: list[str]) -> None:
    """Depth-first TEXT content of an SR content tree; containers become ``HEADING:`` lines."""
    for item in items or []:
        kind = str(item.get("ValueType", "")).upper()
        names = item.get("ConceptNameCodeSequence") or []
        name = str(names[0].get("CodeMeaning", "")).strip() if names else ""
        if kind == "CONTAINER":
            if name:
                out.append(f"{name.upper()}:")
            _sr_lines(item.get("ContentSequence"), name or heading, out)
        elif kind == "TEXT":
            text = str(item.get("TextValue", "")).strip()
            if text:
                same = heading and name and name.lower().rstrip("s") == heading.lower().rstrip("s")
                out.append(text if same or not name else f"{name}: {text}")
            _sr_lines(item.get("ContentSequence"), heading, out)


def read_dicom_report(path: str | Path) -> DicomReport:
    """The text content of a DICOM Structured Report, headings kept for the sanitiser.

    A container "Findings" holding TEXT items gives ``FINDINGS:`` then one line per item, so
    that sanitisation can keep only findings and impression sections.
    """
    path = Path(path)
    return _report(path, read_dataset(path, stop_before_pixels=True))


def _report(path: Path, ds: Dataset) -> DicomReport:
    if not is_structured_report(ds):
        raise InputError(f"DICOM is not a structured report: {path.name}")
    lines: list[str] = []
    _sr_lines(ds.get("ContentSequence"), None, lines)
    text = "\n".join(lines).strip()
    if not text:
        raise InputError(f"structured report has no text: {path.name}")
    study_id = tag_text(ds, "StudyInstanceUID")
    if study_id is None:
        raise InputError(f"DICOM lacks StudyInstanceUID: {path.name}")
    return DicomReport(path=path, study_id=study_id, sop_uid=tag_text(ds, "SOPInstanceUID") or "",
                       text=text)  # fmt: skip
