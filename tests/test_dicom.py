"""DICOM headers and pixels: the three real files, and synthetic files for each branch."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    ComprehensiveSRStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from casebase.errors import InputError
from casebase.imaging.dicom import DicomRecord, read_dicom_header, read_dicom_report
from casebase.imaging.dicom_pixels import dicom_to_image
from casebase.ingest.dicom_source import iter_dicom_files, read_dicom_folder

DICOM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"
SIIM = DICOM_DIR / "siim_acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
FAKE_MONO1 = DICOM_DIR / "torchxrayvision_Fake_MONOHR1.dcm"
HIGHDICOM = DICOM_DIR / "highdicom_dx_image.dcm"
STUDY = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture(autouse=True)
def strict_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic files must be valid DICOM, or the tests would test our own mistakes."""
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)


def _dataset(sop_class: str = DigitalXRayImageStorageForPresentation, **tags: object) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P-1"
    ds.PatientSex = "F"
    ds.PatientAge = "040Y"
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def _with_pixels(ds: Dataset, arr: np.ndarray, photometric: str) -> Dataset:
    ds.set_pixel_data(arr, photometric, int(arr.dtype.itemsize * 8) if arr.dtype != np.uint16
                      else 12)  # fmt: skip
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def make_dicom(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, arr: np.ndarray | None = None, photometric: str = "MONOCHROME2",
             **tags: object) -> Path:  # fmt: skip
        ds = _dataset(**tags)
        if arr is not None:
            _with_pixels(ds, arr, photometric)
        return _save(ds, tmp_path / name)

    return make


# ------------------------------------------------------------------------------ real files


def test_siim_header() -> None:
    record = read_dicom_header(SIIM)
    assert record == DicomRecord(
        path=SIIM,
        study_id="1.2.276.0.7230010.3.1.2.8323329.6904.1517875201.850818",
        series_uid="1.2.276.0.7230010.3.1.3.8323329.6904.1517875201.850817",
        sop_uid="1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819",
        patient_id="16d7f894-55d7-4d95-8957-d18987f0e981",
        age=62.0,
        sex="M",
        modality="CXR",
        modality_raw="CR",
        body_part="CHEST",
        view="PA",
        study_date=None,  # 19010101 is a placeholder
        accession=None,
        report_text=None,
        flags=("derived",),  # secondary capture
    ), record


def test_fake_monochrome1_has_same_header() -> None:
    siim, fake = read_dicom_header(SIIM), read_dicom_header(FAKE_MONO1)
    assert (fake.study_id, fake.age, fake.sex, fake.modality, fake.view) == (
        siim.study_id, 62.0, "M", "CXR", "PA",
    )  # fmt: skip


def test_highdicom_header() -> None:
    record = read_dicom_header(HIGHDICOM)
    assert (record.sex, record.age, record.view, record.modality, record.modality_raw) == (
        "F", 5.0, None, "CXR", "DX",
    )  # fmt: skip
    assert record.body_part == "THORAX"
    assert record.study_date == dt.date(2020, 1, 25)
    assert record.accession == "16387a"
    assert record.flags == ()


def test_siim_jpeg_baseline_decodes_with_pillow() -> None:
    image = dicom_to_image(SIIM)
    assert (image.mode, image.size) == ("L", (1024, 1024))
    pixels = np.asarray(image)
    raw = pydicom.dcmread(SIIM).pixel_array  # MONOCHROME2, 8-bit, no window: kept as stored
    assert np.array_equal(pixels, raw)
    assert pixels.mean() == pytest.approx(160.4, abs=0.1)  # Pillow and libjpeg differ slightly


def test_fake_monochrome1_is_inverted() -> None:
    siim = np.asarray(dicom_to_image(SIIM), dtype=np.int16)
    fake = np.asarray(dicom_to_image(FAKE_MONO1), dtype=np.int16)
    assert np.array_equal(fake, 255 - siim)
    assert np.corrcoef(siim.ravel(), fake.ravel())[0, 1] == pytest.approx(-1.0)


def test_highdicom_monochrome1_is_inverted_once() -> None:
    """MONOCHROME1 + Presentation LUT Shape INVERSE (as the DX IOD requires) = one inversion."""
    image = dicom_to_image(HIGHDICOM)
    assert (image.mode, image.size) == ("L", (211, 169))
    stored = pydicom.dcmread(HIGHDICOM).pixel_array.astype(np.int16)
    pixels = np.asarray(image, dtype=np.int16)
    # window 128/256 over 8 bits is the identity (±1 rounding), then inversion
    assert np.abs(pixels - (255 - stored)).max() <= 1
    assert np.corrcoef(stored.ravel(), pixels.ravel())[0, 1] < -0.99


def test_iter_dicom_files_uses_preamble(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(SIIM, tmp_path / "a" / "b" / "IM0001")  # no extension
    shutil.copy(HIGHDICOM, tmp_path / "z.dcm")
    (tmp_path / "fake.dcm").write_text("not dicom at all")
    (tmp_path / "notes.txt").write_text("hello")
    assert list(iter_dicom_files(tmp_path)) == [tmp_path / "a" / "b" / "IM0001", tmp_path / "z.dcm"]
    with pytest.raises(InputError, match=r"^not a folder: "):
        list(iter_dicom_files(tmp_path / "missing"))


def test_sibling_txt_report(tmp_path: Path) -> None:
    path = Path(shutil.copy(SIIM, tmp_path / "study1.dcm"))
    (tmp_path / "study1.txt").write_text("FINDINGS: Small left pneumothorax.\n")
    assert read_dicom_header(path).report_text == "FINDINGS: Small left pneumothorax."


# ------------------------------------------------------------------------- synthetic pixels


def test_16bit_window_center_width(make_dicom: Callable[..., Path]) -> None:
    """CT-like: HU = raw − 1024, window 40/400 → −160 HU is black, +240 HU is white."""
    raw = np.array([[0, 1024 + 40, 4095], [1024 - 160, 1024 + 240, 1024 - 1000]], np.uint16)
    path = make_dicom("ct.dcm", raw, RescaleSlope=1, RescaleIntercept=-1024,
                      WindowCenter=40, WindowWidth=400)  # fmt: skip
    pixels = np.asarray(dicom_to_image(path))
    assert pixels.dtype == np.uint8
    assert pixels[0, 0] == 0 and pixels[0, 2] == 255 and pixels[1, 2] == 0
    assert abs(int(pixels[0, 1]) - 128) <= 1  # the window centre is mid-grey
    assert pixels[1, 0] <= 1 and pixels[1, 1] >= 254


def test_16bit_monochrome1_window_then_invert(make_dicom: Callable[..., Path]) -> None:
    raw = np.array([[0, 2048, 4095]], np.uint16)
    path = make_dicom("m1.dcm", raw, "MONOCHROME1", WindowCenter=2048, WindowWidth=4096)
    assert np.asarray(dicom_to_image(path)).tolist()[0][0] == 255
    assert np.asarray(dicom_to_image(path)).tolist()[0][2] == 0


def test_16bit_without_window_is_stretched_by_percentile(make_dicom: Callable[..., Path]) -> None:
    raw = np.tile(np.arange(1000, 1400, dtype=np.uint16), (10, 1))
    raw[0, 0] = 4095  # one hot pixel must not darken the rest
    pixels = np.asarray(dicom_to_image(make_dicom("ramp.dcm", raw))).astype(int)
    assert pixels[5, 2] == 0 and pixels[5, -2] == 255
    assert np.all(np.diff(pixels[5]) >= 0)
    assert 120 <= pixels[5, 200] <= 135


def test_rgb(make_dicom: Callable[..., Path]) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[1, 2] = 200, (10, 20, 30)
    image = dicom_to_image(make_dicom("rgb.dcm", rgb, "RGB"))
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), rgb)


def test_multiframe_gives_first_frame(make_dicom: Callable[..., Path]) -> None:
    frames = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 100, 200)])
    path = make_dicom("multi.dcm", frames)
    pixels = np.asarray(dicom_to_image(path))
    assert pixels.shape == (8, 8) and set(pixels.ravel().tolist()) == {10}


def test_no_pixel_data(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom("empty.dcm")
    assert read_dicom_header(path).sex == "F"  # the header alone is fine
    with pytest.raises(InputError, match=r"^DICOM has no pixel data$"):
        dicom_to_image(path)


def test_missing_decoder_names_transfer_syntax(tmp_path: Path) -> None:
    ds = pydicom.dcmread(SIIM)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # video: no decoder in the dicom extra
    path = tmp_path / "jls.dcm"
    ds.save_as(path)
    with pytest.raises(InputError, match=r"^cannot decode DICOM pixel data \(MPEG2 Main Profile"):
        dicom_to_image(path)


def test_truncated_dicom(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(SIIM.read_bytes()[:60_000])  # cut inside the JPEG fragments
    with pytest.raises(InputError, match=r"^truncated or corrupt DICOM \(cut\.dcm: End of file"):
        dicom_to_image(path)


def test_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_text("hello")
    with pytest.raises(InputError, match=r"^not a DICOM file \(x\.dcm: "):
        read_dicom_header(path)


def test_bad_header_value_is_an_input_error(make_dicom: Callable[..., Path]) -> None:
    with pytest.raises(InputError, match=r"^impossible age '250Y'$"):
        read_dicom_header(make_dicom("old.dcm", PatientAge="250Y"))
    with pytest.raises(InputError, match=r"^unknown modality 'OT'$"):
        read_dicom_header(make_dicom("ot.dcm", Modality="OT"))


def test_age_from_birth_and_study_dates(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom("dob.dcm", PatientAge="", PatientBirthDate="19580301",
                      StudyDate="20200301")  # fmt: skip
    assert read_dicom_header(path).age == pytest.approx(62.0, abs=0.01)


def test_flags_from_header(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom("flags.dcm", ViewPosition="AP", BurnedInAnnotation="YES",
                      ImageType=["DERIVED", "PRIMARY"])  # fmt: skip
    assert read_dicom_header(path).flags == ("burned_in_annotation", "derived")


# ---------------------------------------------------------------------- structured reports


def _text_item(meaning: str, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code(meaning)])
    item.TextValue = text
    return item


def _code(meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = meaning[:8].upper().replace(" ", "")
    code.CodingSchemeDesignator = "99TEST"
    code.CodeMeaning = meaning
    return code


def _container(meaning: str, items: list[Dataset]) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "CONTAINER"
    item.ContinuityOfContent = "SEPARATE"
    item.ConceptNameCodeSequence = Sequence([_code(meaning)])
    item.ContentSequence = Sequence(items)
    return item


@pytest.fixture
def sr_path(tmp_path: Path) -> Path:
    ds = _dataset(ComprehensiveSRStorage, Modality="SR")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("Chest X-ray report")])
    ds.ContentSequence = Sequence([
        _container("Findings", [_text_item("Finding", "Small right pleural effusion."),
                                _text_item("Finding", "No pneumothorax.")]),
        _container("Impression", [_text_item("Impression", "Effusion.")]),
        _text_item("Comment", "Dictated by Dr X."),
    ])  # fmt: skip
    return _save(ds, tmp_path / "sr.dcm")


def test_structured_report_text(sr_path: Path) -> None:
    report = read_dicom_report(sr_path)
    assert report.study_id == STUDY
    assert report.text == (
        "FINDINGS:\nSmall right pleural effusion.\nNo pneumothorax.\n"
        "IMPRESSION:\nEffusion.\nComment: Dictated by Dr X."
    )
    with pytest.raises(InputError, match=r"^DICOM is a structured report, not an image: sr\.dcm$"):
        read_dicom_header(sr_path)
    with pytest.raises(InputError, match=r"^DICOM has no pixel data$"):
        dicom_to_image(sr_path)
    with pytest.raises(InputError, match=r"^DICOM is not a structured report: "):
        read_dicom_report(SIIM)


def test_folder_attaches_sr_text_and_collects_rejects(
    sr_path: Path, make_dicom: Callable[..., Path]
) -> None:
    image = make_dicom("image.dcm", np.zeros((4, 4), np.uint8))
    other = make_dicom("other.dcm", StudyInstanceUID="1.2.3.4")
    bad = make_dicom("bad.dcm", PatientSex="X7")
    scan = read_dicom_folder(sr_path.parent)
    by_path = {r.path: r for r in scan.records}
    assert set(by_path) == {image, other}
    assert by_path[image].report_text is not None
    assert by_path[image].report_text.startswith("FINDINGS:\nSmall right pleural effusion.")
    assert by_path[other].report_text is None
    assert scan.rejects == ((bad, "unknown sex code 'X7'"),)
