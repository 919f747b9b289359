"""Image quality statistics and flags on synthetic and real images."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from casebase.imaging import quality
from casebase.imaging.images import load_image
from casebase.imaging.quality import ImageQuality, measure_quality, quality_flags

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIIM = DATA / "dicom" / "siim_acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _film(size: int = 512) -> Image.Image:
    """A smooth, well-exposed synthetic "radiograph": a radial gradient from 40 to 200."""
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    grey = 200 - 160 * np.clip(np.hypot(x, y) / 0.7, 0, 1)
    return Image.fromarray(grey.astype(np.uint8), mode="L")


def _with_text(image: Image.Image) -> Image.Image:
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    for x, y, text in ((20, 20, "L"), (360, 20, "PORTABLE"), (20, 470, "AP SUPINE 12:03")):
        draw.text((x, y), text, fill=255, font_size=28)
    return marked


def test_clean_film_has_no_flags() -> None:
    q = measure_quality(_film())
    assert (q.width, q.height) == (512, 512)
    assert 40 <= q.p01 < q.p99 <= 200
    assert q.saturated_low == 0.0 and q.saturated_high == 0.0
    assert q.text_likelihood < 0.05
    assert quality_flags(q) == (), q


def test_all_white_is_overexposed() -> None:
    q = measure_quality(Image.new("L", (300, 300), 255))
    assert (q.mean, q.std, q.saturated_high, q.saturated_low) == (255.0, 0.0, 1.0, 0.0)
    assert quality_flags(q) == ("low_contrast", "overexposed")


def test_all_black_is_underexposed() -> None:
    q = measure_quality(Image.new("RGB", (300, 300), (0, 0, 0)))
    assert (q.mean, q.saturated_low) == (0.0, 1.0)
    assert quality_flags(q) == ("low_contrast", "underexposed")


def test_half_black_padding_is_underexposed() -> None:
    grey = np.asarray(_film(400)).copy()
    grey[:, :250] = 0
    q = measure_quality(Image.fromarray(grey))
    assert q.saturated_low == pytest.approx(250 / 400, abs=0.01)
    assert "underexposed" in quality_flags(q)


def test_flat_grey_is_low_contrast() -> None:
    grey = np.random.default_rng(0).normal(128, 5, (300, 300)).clip(0, 255).astype(np.uint8)
    q = measure_quality(Image.fromarray(grey))
    assert q.p99 - q.p01 < quality.LOW_CONTRAST_RANGE
    assert quality_flags(q) == ("low_contrast",)


def test_small_image_is_low_resolution() -> None:
    q = measure_quality(_film(512).resize((200, 180)))
    assert (q.width, q.height) == (200, 180)
    assert quality_flags(q) == ("low_resolution",)


def test_burned_in_text() -> None:
    clean, marked = measure_quality(_film()), measure_quality(_with_text(_film()))
    assert clean.text_likelihood < 0.05 < quality.BURNED_IN_TEXT_MIN <= marked.text_likelihood
    assert quality_flags(marked) == ("burned_in_text",)
    assert quality_flags(marked, modality="CXR") == ("burned_in_text",)
    assert quality_flags(marked, modality="CT") == ()  # not calibrated for cross-sections


def test_real_cxr_with_marker() -> None:
    """The SIIM film has a burned-in "L" marker in its top right corner."""
    q = measure_quality(load_image(SIIM))
    assert (q.width, q.height) == (1024, 1024)
    assert q.mean == pytest.approx(160.4, abs=0.5)
    assert q.text_likelihood >= quality.BURNED_IN_TEXT_MIN
    assert quality_flags(q, modality="CXR") == ("burned_in_text",)


def test_thresholds_are_inclusive_as_documented() -> None:
    base = dict(mean=100.0, std=40.0, p01=10.0, p99=200.0, saturated_low=0.0,
                saturated_high=0.0, text_likelihood=0.0, width=224, height=224)  # fmt: skip
    assert quality_flags(ImageQuality(**base)) == ()
    assert quality_flags(ImageQuality(**{**base, "mean": 39.9})) == ("underexposed",)
    assert quality_flags(ImageQuality(**{**base, "mean": 215.1})) == ("overexposed",)
    assert quality_flags(ImageQuality(**{**base, "saturated_high": 0.51})) == ("overexposed",)
    assert quality_flags(ImageQuality(**{**base, "p99": 69.9})) == ("low_contrast",)
    assert quality_flags(ImageQuality(**{**base, "width": 223})) == ("low_resolution",)
    assert quality_flags(ImageQuality(**{**base, "text_likelihood": 0.5})) == ("burned_in_text",)
    assert ImageQuality(**base).as_dict() == base


def test_fast_on_large_images() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (2048, 2048), dtype=np.uint8))
    start = time.perf_counter()
    for _ in range(5):
        measure_quality(image)
    assert (time.perf_counter() - start) / 5 < 0.1
