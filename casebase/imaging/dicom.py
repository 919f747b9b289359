"""Read DICOM files: the header into a :class:`DicomRecord`, the pixels into an 8-bit image.

Pixel pipeline of :func:`dicom_to_image` (PS3.3 C.11, in the standard's order):

    decode (first frame only) → Modality LUT / rescale → VOI LUT or window centre/width
    → 8-bit → MONOCHROME1 inversion (after windowing, so the window means what it says)

Without a VOI LUT or window, 8-bit data is kept as stored and wider data is stretched
between its 0.5th and 99.5th percentiles. Colour images (RGB, YBR_* — converted by pydicom —
and PALETTE COLOR) become RGB. Presentation LUT Shape is not applied separately: the DX IOD
requires ``INVERSE`` exactly when the image is MONOCHROME1, so applying both would invert
twice (the highdicom test file is such a case).

Decoders: pydicom decodes native (uncompressed) data itself and JPEG Baseline/Extended
through Pillow. JPEG Lossless (common in CR/DX archives), JPEG-LS and HTJ2K need
``pylibjpeg`` + ``pylibjpeg-libjpeg`` (and ``pylibjpeg-openjpeg`` for JPEG 2000 when Pillow
lacks OpenJPEG); a file needing a missing decoder is rejected with a reason naming it.

A DICOM Structured Report has no pixels: it carries the report text of its study
(:func:`read_dicom_report`); :func:`read_dicom_folder` attaches it to the study's images.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from casebase.errors import InputError
from casebase.imaging import values
from casebase.imaging.images import has_dicom_preamble, to_uint8

__all__ = [
    "DicomFolder",
    "DicomRecord",
    "DicomReport",
    "dicom_to_image",
    "is_dicom_file",
    "is_structured_report",
    "iter_dicom_files",
    "read_dicom_folder",
    "read_dicom_header",
    "read_dicom_report",
]

log = logging.getLogger(__name__)

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
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


@dataclass(frozen=True)
class DicomFolder:
    """What :func:`read_dicom_folder` found: image records, and (path, reason) rejects."""

    records: tuple[DicomRecord, ...]
    rejects: tuple[tuple[Path, str], ...]


# ------------------------------------------------------------------------------------ files


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


def _read(path: Path, *, stop_before_pixels: bool) -> Dataset:
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


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# ----------------------------------------------------------------------------------- header


def is_structured_report(ds: Dataset) -> bool:
    """True for a DICOM SR (by modality or SOP class): a report carrier, not an image."""
    sop_class = str(ds.get("SOPClassUID", ""))
    return _text(ds, "Modality") == "SR" or sop_class.startswith(_SR_SOP_CLASS_PREFIX)


def _age(ds: Dataset) -> float | None:
    """PatientAge, or StudyDate − PatientBirthDate when the age is not recorded."""
    age = values.parse_age(_text(ds, "PatientAge"))
    if age is not None:
        return age
    birth = values.parse_date(_text(ds, "PatientBirthDate"))
    study = values.parse_date(_text(ds, "StudyDate"))
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


def read_dicom_header(path: str | Path) -> DicomRecord:
    """The :class:`DicomRecord` of an image DICOM file, read without its pixels.

    Values are normalised (so an impossible age or unknown modality raises ``InputError``
    for the rejects table). ``report_text`` comes from a ``.txt`` file with the same stem;
    SR reports of the same study are attached by :func:`read_dicom_folder`. Flags: the view's
    (``portable``, ``supine``…), ``burned_in_annotation`` when the header says so, and
    ``derived`` for secondary captures and derived images (processed, possibly annotated).
    """
    path = Path(path)
    return _record(path, _read(path, stop_before_pixels=True))


def _record(path: Path, ds: Dataset) -> DicomRecord:
    if is_structured_report(ds):
        raise InputError(f"DICOM is a structured report, not an image: {path.name}")
    study_id = _text(ds, "StudyInstanceUID")
    sop_uid = _text(ds, "SOPInstanceUID")
    if study_id is None or sop_uid is None:
        raise InputError(f"DICOM lacks StudyInstanceUID or SOPInstanceUID: {path.name}")
    body_part = _text(ds, "BodyPartExamined")
    description = " ".join(filter(None, (_text(ds, tag) for tag in _DESCRIPTION_TAGS)))
    modality_raw = _text(ds, "Modality") or ""
    view_raw = _text(ds, "ViewPosition")

    flags = values.view_flags(view_raw)
    if (_text(ds, "BurnedInAnnotation") or "").upper() == "YES":
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
        series_uid=_text(ds, "SeriesInstanceUID"),
        sop_uid=sop_uid,
        patient_id=_text(ds, "PatientID"),
        age=_age(ds),
        sex=values.parse_sex(_text(ds, "PatientSex")),
        modality=values.normalise_modality(modality_raw, body_part, description=description),
        modality_raw=modality_raw,
        body_part=body_part,
        view=values.normalise_view(view_raw),
        study_date=values.parse_date(_text(ds, "StudyDate")),
        accession=_text(ds, "AccessionNumber"),
        report_text=_sibling_report(path),
        flags=values.parse_flags(";".join(sorted(flags))),
    )


# ----------------------------------------------------------------------------------- report


def _sr_lines(items: object, heading: str | None, out: list[str]) -> None:
    """Depth-first TEXT content of an SR content tree; containers become ``HEADING:`` lines."""
    for item in items or []:  # type: ignore[union-attr]
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
    return _report(path, _read(path, stop_before_pixels=True))


def _report(path: Path, ds: Dataset) -> DicomReport:
    if not is_structured_report(ds):
        raise InputError(f"DICOM is not a structured report: {path.name}")
    lines: list[str] = []
    _sr_lines(ds.get("ContentSequence"), None, lines)
    text = "\n".join(lines).strip()
    if not text:
        raise InputError(f"structured report has no text: {path.name}")
    study_id = _text(ds, "StudyInstanceUID")
    if study_id is None:
        raise InputError(f"DICOM lacks StudyInstanceUID: {path.name}")
    return DicomReport(path=path, study_id=study_id, sop_uid=_text(ds, "SOPInstanceUID") or "",
                       text=text)  # fmt: skip


def read_dicom_folder(folder: str | Path) -> DicomFolder:
    """Headers of every DICOM under ``folder``, with SR report text attached by study.

    A bad file is a reject (path, reason), never the end of the scan. An image whose
    ``report_text`` is already set (sibling ``.txt``) keeps it; otherwise it gets the text of
    its study's SRs (joined, in path order).
    """
    records: list[DicomRecord] = []
    rejects: list[tuple[Path, str]] = []
    reports: dict[str, list[str]] = {}
    for path in iter_dicom_files(folder):
        try:
            ds = _read(path, stop_before_pixels=True)
            if is_structured_report(ds):
                report = _report(path, ds)
                reports.setdefault(report.study_id, []).append(report.text)
            else:
                records.append(_record(path, ds))
        except InputError as exc:
            log.info("rejected %s: %s", path, exc)
            rejects.append((path, str(exc)))
    merged = tuple(
        dataclasses.replace(r, report_text="\n\n".join(reports[r.study_id]))
        if r.report_text is None and r.study_id in reports
        else r
        for r in records
    )
    return DicomFolder(records=merged, rejects=tuple(rejects))


# ----------------------------------------------------------------------------------- pixels


def _window_range(ds: Dataset) -> tuple[float, float]:
    """Output range of pydicom's ``apply_windowing`` (PS3.3 C.11.2.1.2), to map it to 0..255."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2**bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min, y_max = (
            y_min * float(slope) + float(intercept),
            y_max * float(slope) + float(intercept),
        )
    return y_min, y_max


def _grey_to_uint8(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT → VOI LUT/window → 8-bit, for one MONOCHROME frame."""
    has_voi_lut = bool(ds.get("VOILUTSequence"))
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    rescaled = apply_modality_lut(arr, ds)
    if has_voi_lut:
        out = apply_voi_lut(rescaled, ds, index=0)
        lut = np.asarray(ds.VOILUTSequence[0].LUTData)
        return to_uint8(out, low=float(lut.min()), high=float(lut.max()))
    if has_window:
        out = apply_voi_lut(rescaled, ds, index=0, prefer_lut=False)
        low, high = _window_range(ds)
        return to_uint8(out, low=low, high=high)
    if int(ds.BitsStored) <= 8 and rescaled.min() >= 0 and rescaled.max() <= 255:
        return np.rint(rescaled).astype(np.uint8)  # already display values: keep them exactly
    return to_uint8(rescaled)


def dicom_to_image(path: str | Path) -> Image.Image:
    """The first frame of a DICOM image as an 8-bit PIL image, ``"L"`` or ``"RGB"``.

    See the module docstring for the pipeline. No pixel data → ``InputError("DICOM has no
    pixel data")``; a compressed transfer syntax without an installed decoder →
    ``InputError`` naming the transfer syntax and the missing package.
    """
    path = Path(path)
    ds = _read(path, stop_before_pixels=False)
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise InputError("DICOM has no pixel data")
    photometric = (_text(ds, "PhotometricInterpretation") or "").upper()
    try:
        arr = pixel_array(ds, index=0)
    except (RuntimeError, NotImplementedError, ValueError, AttributeError, KeyError) as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        name = getattr(syntax, "name", str(syntax))
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot decode DICOM pixel data ({name}: {reason})") from exc

    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim != 2:
            raise InputError(f"unexpected {photometric} pixel shape {arr.shape}")
        grey = _grey_to_uint8(arr, ds)
        if photometric == "MONOCHROME1":
            grey = 255 - grey  # MONOCHROME1: low values are white; invert after windowing
        return Image.fromarray(np.ascontiguousarray(grey), mode="L")
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        high = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else None
        rgb8 = rgb if rgb.dtype == np.uint8 else to_uint8(rgb, low=0.0, high=high)
        return Image.fromarray(np.ascontiguousarray(rgb8), mode="RGB")
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"):
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise InputError(f"unexpected {photometric} pixel shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = to_uint8(arr, low=0.0, high=float(2 ** int(ds.BitsStored) - 1))
        return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    raise InputError(f"unsupported photometric interpretation '{photometric or 'missing'}'")
