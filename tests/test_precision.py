"""Embedding precision (fp32, bf16, fp16 autocast) on this machine's CPU: bf16 vectors
agree with fp32 ones, a batch loaded in bf16 joins the same space and records its
precision, a precision that drifts or overflows is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from casebase.db.connection import connect
from casebase.embedding import Encoder, load_encoder
from casebase.embedding.precision import (
    MIN_AGREEMENT,
    check_precision,
    probe_agreement,
    refuse_disagreement,
)
from casebase.errors import ConfigError, InputError, ModelError


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from casebase.cohort import generate

    return generate(tmp_path_factory.mktemp("precision"), n_chest=30, n_knee=10, seed=21)


@pytest.fixture(scope="module")
def images(manifest: Path) -> torch.Tensor:
    fp32 = load_encoder("tiny-random", device="cpu")
    from PIL import Image

    paths = sorted((manifest.parent / "images").glob("*.png"))
    return torch.stack([fp32.preprocess(Image.open(p)) for p in paths])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_on_cpu_agrees_with_fp32_vector_by_vector(images: torch.Tensor) -> None:
    fp32 = load_encoder("tiny-random", device="cpu")
    bf16 = load_encoder("tiny-random", device="cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.spec == fp32.spec  # precision is not part of the space's identity
    want, got = fp32.encode_images(images), bf16.encode_images(images)
    assert got.dtype == np.float32 and got.shape == want.shape == (40, 64)
    assert not np.array_equal(got, want)  # it did run in bf16
    cos = cosines(want, got)
    assert cos.min() >= MIN_AGREEMENT, cos.min()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # fp32 norm
    texts = ["left pleural effusion", "no acute findings"]
    assert cosines(fp32.encode_text(texts), bf16.encode_text(texts)).min() >= MIN_AGREEMENT


def test_fp16_on_cpu_runs_where_torch_can_and_is_one_line_where_not(images) -> None:
    try:
        check_precision("fp16", "cpu")
    except ConfigError as exc:  # a torch without CPU fp16 autocast
        assert "cannot compute in fp16 on cpu" in str(exc) and "\n" not in str(exc)
        return
    fp16 = load_encoder("tiny-random", device="cpu", precision="fp16")
    fp32 = load_encoder("tiny-random", device="cpu")
    assert cosines(fp32.encode_images(images), fp16.encode_images(images)).min() >= 0.99


def test_unknown_precision_and_fp16_training_are_refused() -> None:
    from casebase.train.loop import _precision

    with pytest.raises(ConfigError, match="--precision must be one of fp32, bf16, fp16"):
        load_encoder("tiny-random", device="cpu", precision="fp8")
    with pytest.raises(InputError, match="needs loss scaling"):
        _precision("fp16", "cpu")
    assert _precision(None, "cpu") == "fp32" and _precision("bf16", "cpu") == "bf16"


def test_a_drifting_precision_is_refused() -> None:
    rng = np.random.default_rng(0)
    fixed = rng.normal(size=(4, 16))

    def fp32(batch):
        return fixed

    def noisy(batch):  # rounding error as large as the vectors themselves
        return fixed + rng.normal(size=fixed.shape)

    agreement = probe_agreement(fp32, noisy, 32)
    assert agreement < MIN_AGREEMENT
    message = str(refuse_disagreement("m", "fp16", agreement))
    assert message.startswith("m in fp16 drifts from fp32") and "bf16 or fp32" in message
    assert np.isnan(probe_agreement(fp32, lambda b: fixed * np.nan, 32))  # refused too
    assert probe_agreement(fp32, fp32, 32) == pytest.approx(1.0)


class _Overflows(torch.nn.Module):
    """A model whose activations exceed fp16's range (65504): fine in fp32 and bf16."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 4, bias=False)
        torch.nn.init.constant_(self.proj.weight, 1e4)

    def encode_image(self, x):
        return self.proj(x.flatten(1))


def test_an_fp16_overflow_never_reaches_the_index() -> None:
    from casebase.embedding.encoder import Preprocess, SpaceSpec

    spec = SpaceSpec("overflow", "x", None, None, 4, 8, "x")
    batch = torch.ones(2, 3, 8, 8)
    fine = Encoder(_Overflows(), Preprocess(lambda im: im), spec, "cpu", "x", "bf16")
    assert np.isfinite(fine.encode_images(batch)).all()
    try:
        check_precision("fp16", "cpu")
    except ConfigError:
        pytest.skip("this torch has no fp16 autocast on CPU")
    broken = Encoder(_Overflows(), Preprocess(lambda im: im), spec, "cpu", "x", "fp16")
    with pytest.raises(ModelError, match="produced a non-finite vector in fp16"):
        broken.encode_images(batch)


def test_ingest_in_bf16_from_the_command_line(db_url: str, manifest: Path, images) -> None:
    argv = [sys.executable, "-m", "casebase.cli", "ingest", str(manifest), "--batch", "bf16"]
    argv += ["--model", "tiny-random", "--precision", "bf16", "--batch-size", "8", "--json"]
    argv += ["--workers", "1", "--no-progress"]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": db_url},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["loaded"] == 40 and summary["space"] == "tiny-random", summary
    with connect(db_url) as conn:
        stats = conn.execute(
            "SELECT stats -> 'shards' -> '0/1' ->> 'precision' FROM casebase.batches "
            "WHERE batch = 'bf16'"
        ).fetchone()
        rows = conn.execute(
            "SELECT i.uri, e.vec FROM casebase.embeddings e "
            "JOIN casebase.images i USING (image_id) ORDER BY i.uri"
        ).fetchall()
    assert stats == ("bf16",)
    stored = np.stack([np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows])
    assert [Path(r[0]).name for r in rows] == sorted(
        p.name for p in (manifest.parent / "images").glob("*.png")
    )
    want = load_encoder("tiny-random", device="cpu").encode_images(images)
    assert cosines(want, stored).min() >= MIN_AGREEMENT


def test_train_one_epoch_in_bf16_on_cpu(db_url: str, manifest: Path, tmp_path: Path) -> None:
    from casebase.train.loop import train

    with connect(db_url) as conn:
        result = train(
            conn,
            space="tiny-random",
            text="label:label",
            epochs=1,
            out=tmp_path / "run",
            device="cpu",
            precision="bf16",
            batch_size=8,
            holdout=0.3,
            workers=0,
            progress=False,
        )
    assert result.epochs_done == 1 and np.isfinite(result.history[0]["loss"]), result
    config = json.loads((tmp_path / "run" / "model.json").read_text())
    assert config["training"]["precision"] == "bf16", config["training"]


def test_reembed_loads_its_encoder_at_the_precision_asked(db_url: str) -> None:
    from casebase.db.spaces import get_space
    from casebase.retrieval.encode import encoder_for_space

    with connect(db_url) as conn:
        space = get_space(conn, "tiny-random")
    assert encoder_for_space(space, "cpu", "bf16").precision == "bf16"
    assert encoder_for_space(space, "cpu").precision == "fp32"
