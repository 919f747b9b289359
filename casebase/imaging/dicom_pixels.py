"""The pixels of a DICOM image as an 8-bit PIL image.

Pipeline of :func:`dicom_to_image` (PS3.3 C.11, in the standard's order):

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

Apart from the header reader (:mod:`casebase.imaging.dicom`) because headers are read for
every file of a folder and pixels only by the decode workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from casebase.errors import InputError
from casebase.imaging.dicom import read_dataset, tag_text
from casebase.imaging.pixels import to_uint8

__all__ = ["dicom_to_image"]

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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
    ds = read_dataset(path, stop_before_pixels=False)
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise InputError("DICOM has no pixel data")
    photometric = (tag_text(ds, "PhotometricInterpretation") or "").upper()
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
