"""Image decoding: every supported format to RGB, and the exact reason for each bad file."""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from casebase.errors import InputError
from casebase.imaging.files import has_dicom_preamble, sha256_file
from casebase.imaging.images import load_image
from casebase.imaging.pixels import to_uint8

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COVID = DATA / "covid_cxr" / "images"
COVID_JPEG = COVID / "16583_3_1.jpg"
COVID_PNG = COVID / "000006-2.png"
SIIM = DATA / "dicom" / "siim_acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def test_real_jpeg_and_png() -> None:
    for path in (COVID_JPEG, COVID_PNG):
        image = load_image(path)
        with Image.open(path) as original:
            assert (image.mode, image.size) == ("RGB", original.size), path


def test_grey_png_becomes_rgb_with_equal_channels(tmp_path: Path) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    pixels = np.asarray(load_image(tmp_path / "g.png"))
    assert pixels.shape == (8, 8, 3)
    assert all(np.array_equal(pixels[..., c], grey) for c in range(3))


def test_16bit_png_is_stretched_to_8bit(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 4095, 256).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "g16.png")  # 12-bit data in a 16-bit PNG
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode.startswith("I")
    pixels = np.asarray(load_image(tmp_path / "g16.png"))[0, :, 0].astype(int)
    assert pixels[0] == 0 and pixels[-1] == 255 and np.all(np.diff(pixels) >= 0)


def test_16bit_tiff(tmp_path: Path) -> None:
    arr = np.array([[100, 200], [300, 400]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "t.tif")
    pixels = np.asarray(load_image(tmp_path / "t.tif"))[..., 0]
    assert pixels[0, 0] == 0 and pixels[1, 1] == 255 and pixels[0, 1] < pixels[1, 0]


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 255, 255, 255)
    rgba[0, 1] = (255, 255, 255, 0)
    rgba[1, 0] = (200, 100, 0, 128)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    pixels = np.asarray(load_image(tmp_path / "a.png")).tolist()
    assert pixels[0][0] == [255, 255, 255]
    assert pixels[0][1] == [0, 0, 0]
    assert pixels[1][0] == [100, 50, 0]


def test_palette_and_bmp(tmp_path: Path) -> None:
    palette = Image.new("P", (3, 3))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").getpixel((1, 1)) == (255, 0, 0)
    Image.new("L", (5, 4), 77).save(tmp_path / "b.bmp")
    image = load_image(tmp_path / "b.bmp")
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (5, 4), (77, 77, 77))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (20, 10), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (10, 20)


def test_dicom_is_dispatched_with_or_without_extension(tmp_path: Path) -> None:
    copy = Path(shutil.copy(SIIM, tmp_path / "IM0001"))
    assert has_dicom_preamble(copy) and not has_dicom_preamble(COVID_JPEG)
    for path in (SIIM, copy):
        image = load_image(path)
        assert (image.mode, image.size) == ("RGB", (1024, 1024))
        r, g, b = (np.asarray(image)[..., c] for c in range(3))
        assert np.array_equal(r, g) and np.array_equal(g, b)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value) == f"file not found: {path}"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_image(tmp_path)
    assert str(info.value) == f"not a file: {tmp_path}"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value) == f"zero-byte file: {path}"


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("Patient doing well.\n")
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value) == "not an image (notes.png: looks like a text file)"


def test_pdf_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "report.jpg"
    path.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value) == "not an image (report.jpg: looks like a PDF)"


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = COVID_JPEG.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value).startswith(
        "truncated or corrupt image (half.jpg: image file is truncated"
    )
    assert "\n" not in str(info.value)


def test_truncated_png(tmp_path: Path) -> None:
    data = COVID_PNG.read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"^truncated or corrupt image \(half\.png: "):
        load_image(path)


def test_sha256_file(tmp_path: Path) -> None:
    assert sha256_file(COVID_JPEG) == hashlib.sha256(COVID_JPEG.read_bytes()).hexdigest()
    with pytest.raises(InputError, match=r"^file not found: "):
        sha256_file(tmp_path / "nope")


def test_to_uint8_edge_cases() -> None:
    assert to_uint8(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]
    assert to_uint8(np.array([0.0, 5.0, 10.0]), low=0.0, high=10.0).tolist() == [0, 128, 255]
    assert to_uint8(np.array([np.nan, 1.0, 2.0]), low=1.0, high=2.0).tolist() == [0, 0, 255]


def test_load_image_works_in_spawned_worker() -> None:
    """DataLoader workers may be spawned: the function must pickle by reference."""
    assert pickle.loads(pickle.dumps(load_image)) is load_image
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        size = pool.submit(_size_of, COVID_JPEG).result(timeout=60)
    assert size == load_image(COVID_JPEG).size


def _size_of(path: Path) -> tuple[int, int]:
    return load_image(path).size
