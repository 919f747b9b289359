"""casebase.embedding: tiny-random determinism, streams with bad images, loud failures.

Everything runs offline on CPU with the seeded ``tiny-random`` preset; the
"real" presets must fail fast with a ModelError on a machine without their
weights (this test machine has no internet and an empty Hugging Face cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from PIL import Image  # noqa: E402

from casebase.embedding import PRESETS, Encoder, load_encoder  # noqa: E402
from casebase.errors import InputError, ModelError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return load_encoder("tiny-random", device="cpu")


def _images(n: int) -> list[Image.Image]:
    """Deterministic synthetic X-ray-ish images of different sizes and modes."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        h, w = 80 + 13 * i, 96 + 7 * i
        gradient = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
        noise = rng.normal(0, 40, size=(h, w)).astype(np.float32)
        pixels = np.clip(gradient + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        out.append(image.convert("RGB") if i % 2 else image)
    return out


def load_path(path: Path) -> Image.Image:
    """What ingest supplies: a module-level (picklable) loader; errors are the stream's."""
    if path.suffix == ".missing":
        raise InputError(f"{path.name}: file listed in the manifest does not exist")
    return Image.open(path)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six good PNG/JPEG files and three bad ones, in a fixed order."""
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i, image in enumerate(_images(6)):
        path = root / f"good{i}.{'png' if i % 2 else 'jpg'}"
        image.save(path)
        paths.append(path)
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is a radiology report, not an image\n")
    paths.insert(2, root / "empty.png")
    paths.insert(5, root / "notes.jpg")
    paths.append(root / "gone.missing")
    return paths


def test_spec_describes_the_space(tiny: Encoder) -> None:
    assert tiny.spec.name == "tiny-random"
    assert (tiny.spec.dim, tiny.spec.image_size) == (64, 64)
    assert tiny.spec.pretrained is None and tiny.spec.checkpoint_sha256 is None
    assert tiny.spec.preprocess == "resize64-centercrop-bicubic-openai-norm"
    assert set(PRESETS) >= {"metaclip-pe-core-bigg-448", "biomedclip", "clip-vit-b-32"}


def test_tiny_random_warns_that_neighbours_are_meaningless(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="casebase.embedding"):
        load_encoder("tiny-random", device="cpu")
    assert any(
        "meaningless" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    ), caplog.text


def test_vectors_are_normalised_float32_of_spec_dim(tiny: Encoder) -> None:
    vectors = tiny.encode_pil(_images(5), batch_size=2)
    assert vectors.shape == (5, tiny.spec.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # different images, different vectors (the random model is not constant)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3


def test_two_loads_give_identical_vectors(tiny: Encoder) -> None:
    again = load_encoder("tiny-random", device="cpu")
    images = _images(3)
    np.testing.assert_array_equal(tiny.encode_pil(images), again.encode_pil(images))


def test_tiny_random_is_the_same_in_another_process(tiny: Encoder, tmp_path: Path) -> None:
    image_path = tmp_path / "x.png"
    _images(1)[0].save(image_path)
    code = (
        "import sys, numpy as np; from PIL import Image; "
        "from casebase.embedding import load_encoder; "
        "v = load_encoder('tiny-random', device='cpu').encode_pil([Image.open(sys.argv[1])]); "
        "np.save(sys.argv[2], v)"
    )
    out = tmp_path / "v.npy"
    subprocess.run(
        [sys.executable, "-c", code, str(image_path), str(out)],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    np.testing.assert_array_equal(np.load(out), tiny.encode_pil([Image.open(image_path)]))


def test_text_encoding(tiny: Encoder) -> None:
    vectors = tiny.encode_text(["small left pleural effusion", "no acute findings", ""])
    assert vectors.shape == (3, tiny.spec.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
    with pytest.raises(InputError):
        tiny.encode_text("one string")


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tiny: Encoder) -> None:
    ramp = np.linspace(0, 4095, 96 * 96).reshape(96, 96).astype(np.uint16)
    tensor = tiny.preprocess(Image.fromarray(ramp))
    assert tensor.std() > 0.5, "a 12-bit image must not collapse to a white square"


def test_stream_reports_bad_items_and_keeps_order(tiny: Encoder, image_dir: list[Path]) -> None:
    seen: list[int] = []
    batches = list(
        tiny.embed_stream(image_dir, load_path, batch_size=4, workers=0, progress=seen.append)
    )
    ok = [item for batch_ok, _, _ in batches for item in batch_ok]
    vectors = np.concatenate([v for _, v, _ in batches])
    failed = dict(f for _, _, batch_failed in batches for f in batch_failed)

    good = [p for p in image_dir if p.stem.startswith("good")]
    assert ok == good
    assert sorted(p.name for p in failed) == ["empty.png", "gone.missing", "notes.jpg"]
    assert "UnidentifiedImageError" in failed[image_dir[2]], failed
    assert failed[image_dir[-1]] == "gone.missing: file listed in the manifest does not exist"
    assert all("\n" not in reason for reason in failed.values())
    assert sum(seen) == len(image_dir)
    for batch_ok, batch_vectors, _ in batches:
        assert batch_vectors.shape == (len(batch_ok), tiny.spec.dim)
    expected = tiny.encode_pil([Image.open(p) for p in good])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_stream_with_workers_matches_in_process(tiny: Encoder, image_dir: list[Path]) -> None:
    def run(workers: int):
        batches = list(tiny.embed_stream(image_dir, load_path, batch_size=3, workers=workers))
        return (
            [i for b, _, _ in batches for i in b],
            np.concatenate([v for _, v, _ in batches]),
            [i for _, _, f in batches for i, _ in f],
        )

    ok0, v0, bad0 = run(0)
    ok2, v2, bad2 = run(2)
    assert (ok0, bad0) == (ok2, bad2)
    np.testing.assert_array_equal(v0, v2)


def load_with_size(path: Path) -> tuple[Image.Image, tuple[int, int]]:
    image = load_path(path)
    return image, image.size


def test_stream_with_extra_returns_what_the_worker_measured(
    tiny: Encoder, image_dir: list[Path]
) -> None:
    batches = list(
        tiny.embed_stream(image_dir, load_with_size, batch_size=4, workers=2, with_extra=True)
    )
    pairs = [pair for ok, _, _ in batches for pair in ok]
    good = [p for p in image_dir if p.stem.startswith("good")]
    assert pairs == [(p, Image.open(p).size) for p in good]
    assert sum(len(f) for _, _, f in batches) == 3


def test_grey_image_gives_the_tensor_of_its_rgb_copy(tiny: Encoder) -> None:
    """Ingest hands grey films over as one band (a third of the resizing): the tensor,
    hence the vector, must be exactly that of the RGB image load_image would give."""
    assert tiny.preprocess.grey_ok
    for image in _images(4):
        grey = image.convert("L")
        assert torch.equal(tiny.preprocess(grey), tiny.preprocess(grey.convert("RGB")))


def test_preprocess_without_grey_ok_converts_grey_to_rgb_first() -> None:
    from casebase.embedding import Preprocess

    seen: list[str] = []
    preprocess = Preprocess(lambda image: seen.append(image.mode) or image, grey_ok=False)
    preprocess(Image.new("L", (8, 8)))
    preprocess(Image.new("RGB", (8, 8)))
    assert seen == ["RGB", "RGB"]


def test_cheap_model_streams_on_one_thread_then_restores(
    tiny: Encoder, image_dir: list[Path]
) -> None:
    """tiny-random embeds far faster than a worker decodes: its intra-op threads would only
    spin against the workers, so the stream runs it on one thread (same vectors)."""
    before = torch.get_num_threads()
    if before == 1:
        pytest.skip("torch already runs on one thread here")
    during = [
        torch.get_num_threads()
        for _ in tiny.embed_stream(image_dir, load_path, batch_size=3, workers=2)
    ]
    assert set(during) == {1}
    assert torch.get_num_threads() == before
    in_process = [
        torch.get_num_threads()
        for _ in tiny.embed_stream(image_dir, load_path, batch_size=3, workers=0)
    ]
    assert set(in_process) == {before}


def test_empty_stream_yields_nothing(tiny: Encoder) -> None:
    assert list(tiny.embed_stream([], load_path)) == []


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("clip-vit-b-32", "model 'clip-vit-b-32' is not in the Hugging Face cache"),
        (
            "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            "model 'biomedclip' is not in the Hugging Face cache",
        ),
        ("no-such-model", "unknown model 'no-such-model'"),
        ("ViT-B-32", "needs --pretrained TAG"),
    ],
)
def test_unloadable_models_fail_fast_with_a_fix(model: str, expected: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        load_encoder(model, device="cpu")
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message
    if "cache" in message:
        assert "HF_HOME" in message and "--model tiny-random" in message, message
    assert time.monotonic() - start < 10, "must not sit in download retries"


def test_biomedclip_without_transformers_names_the_package_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its PubMedBERT text tower needs transformers, which no default extra installs:
    say so before looking for weights, rather than after a download."""
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ModelError) as info:
        load_encoder("biomedclip", device="cpu")
    message = str(info.value)
    assert "needs the Python package transformers" in message, message
    assert "casebase[hf]" in message and "\n" not in message


def test_unknown_pretrained_tag_lists_known_tags() -> None:
    with pytest.raises(ModelError, match=r"not a pretrained tag.*laion2b_s34b_b79k"):
        load_encoder("ViT-B-32", pretrained="imagenet-please", device="cpu")


def test_random_weights_need_the_explicit_flag() -> None:
    encoder = load_encoder("ViT-S-32", allow_random_weights=True, device="cpu")
    assert encoder.spec.name == "random-vit-s-32"
    assert encoder.spec.pretrained is None


def _save_checkpoint(encoder: Encoder, root: Path, **overrides) -> Path:
    weights = root / "model.pt"
    torch.save(encoder.model.state_dict(), weights)
    config = {
        "model_cfg": _tiny_cfg(),
        "image_size": 64,
        "base": "tiny-random",
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        **overrides,
    }
    weights.with_suffix(".json").write_text(json.dumps(config))
    return weights


def _tiny_cfg() -> dict:
    from casebase.embedding.presets import TINY_RANDOM_CFG

    return json.loads(json.dumps(TINY_RANDOM_CFG))


def test_checkpoint_round_trip(tiny: Encoder, tmp_path: Path) -> None:
    weights = _save_checkpoint(tiny, tmp_path)
    loaded = load_encoder(checkpoint=weights, device="cpu")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert loaded.spec.checkpoint_sha256 == sha
    assert loaded.spec.name == f"ckpt-{sha[:12]}"
    assert (loaded.spec.dim, loaded.spec.preprocess) == (tiny.spec.dim, tiny.spec.preprocess)
    images = _images(3)
    np.testing.assert_array_equal(loaded.encode_pil(images), tiny.encode_pil(images))
    np.testing.assert_array_equal(loaded.encode_text(["effusion"]), tiny.encode_text(["effusion"]))


def test_checkpoint_with_mismatching_config_names_the_file(tiny: Encoder, tmp_path: Path) -> None:
    cfg = _tiny_cfg()
    cfg["vision_cfg"]["width"] = 128
    weights = _save_checkpoint(tiny, tmp_path, model_cfg=cfg)
    with pytest.raises(ModelError, match=r"do not match the architecture") as info:
        load_encoder(checkpoint=weights, device="cpu")
    assert str(weights) in str(info.value)


def test_checkpoint_problems_are_model_errors(tiny: Encoder, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_encoder(checkpoint=tmp_path / "nope.pt", device="cpu")
    weights = _save_checkpoint(tiny, tmp_path, sha256="0" * 64)
    with pytest.raises(ModelError, match="wrong or corrupt file"):
        load_encoder(checkpoint=weights, device="cpu")
    weights.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match=r"has no config .*model\.json"):
        load_encoder(checkpoint=weights, device="cpu")


def test_cached_hf_hub_model_loads_without_network(
    tiny: Encoder, tmp_path: Path, monkeypatch
) -> None:
    """An hf-hub: model already in the HF cache loads offline, with its own preprocessing."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    snapshot = tmp_path / "models--casebase--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--casebase--tiny" / "refs").mkdir()
    (tmp_path / "models--casebase--tiny" / "refs" / "main").write_text("a" * 40)
    save_file(
        {k: v.contiguous() for k, v in tiny.model.state_dict().items()},
        snapshot / "open_clip_model.safetensors",
    )
    (snapshot / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": _tiny_cfg(),
                "preprocess_cfg": {
                    "mean": [0.5, 0.5, 0.5],
                    "std": [0.5, 0.5, 0.5],
                    "resize_mode": "squash",
                },
            }
        )
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    encoder = load_encoder("hf-hub:casebase/tiny", device="cpu")
    assert encoder.spec.name == "hf-casebase-tiny"
    assert encoder.spec.preprocess == "squash64-bicubic-half-norm"
    vectors = encoder.encode_pil(_images(2))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, casebase.embedding; "
        "sys.exit(1 if {'torch', 'open_clip'} & set(sys.modules) else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
