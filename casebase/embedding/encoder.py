"""open_clip image/text encoders shared by ingest and retrieval.

One ``Encoder`` is one embedding space (``SpaceSpec``): a model plus its
preprocessing. Ingest and retrieval must embed with the very same space or the
distances mean nothing, so both go through ``load_encoder`` and record
``Encoder.spec`` next to the vectors.

Which model ``load_encoder`` loads:

- a preset name (``PRESETS``): ``metaclip-pe-core-bigg-448``, ``biomedclip``,
  ``clip-vit-b-32`` or ``tiny-random`` (seeded random weights, tests only);
- an ``hf-hub:org/repo`` id of an open_clip model;
- an open_clip architecture plus a pretrained tag
  (``load_encoder("ViT-B-32", pretrained="laion2b_s34b_b79k")``);
- a local checkpoint (``checkpoint="run/model.pt"``) with a JSON config beside
  it, same stem (``run/model.json``), as ``casebase train`` writes it (the format is
  documented in :mod:`casebase.embedding.checkpoint`).

There are no silent fallbacks: weights that cannot be loaded (no network and
not cached, unknown name, missing or mismatching checkpoint) raise
``ModelError`` with a one-line fix; random weights are only ever used by
``tiny-random`` or with the explicit ``allow_random_weights=True`` (timing
benchmarks), and both log a WARNING. Weights already in the Hugging Face cache
are used without any network call (see :mod:`casebase.embedding.weights`).

torch and open_clip are imported lazily: the base install of casebase, which
has neither, can import this module; using it then says which extra to install.
Decoding in worker processes is :mod:`casebase.embedding.stream`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from casebase.embedding import stream
from casebase.embedding.build import build_from_checkpoint, build_named
from casebase.embedding.messages import EMBED_EXTRA_HINT, FIX_HINT
from casebase.embedding.precision import (
    MIN_AGREEMENT,
    autocast,
    check_precision,
    probe_agreement,
    refuse_disagreement,
)
from casebase.embedding.presets import image_size
from casebase.errors import ConfigError, InputError, ModelError

__all__ = ["Encoder", "Preprocess", "SpaceSpec", "load_encoder"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_NORMS = {
    ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)): "openai-norm",
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)): "imagenet-norm",
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): "half-norm",
}


@dataclass(frozen=True)
class SpaceSpec:
    """An embedding space: one model + preprocessing. Vectors of two specs never mix."""

    name: str  # e.g. "clip-vit-b-32", "tiny-random", "ckpt-0123456789ab"
    model_name: str  # open_clip architecture or hf-hub: id
    pretrained: str | None  # open_clip pretrained tag
    checkpoint_sha256: str | None
    dim: int
    image_size: int
    preprocess: str  # e.g. "resize224-centercrop-bicubic-openai-norm"


@dataclass(frozen=True)
class Preprocess:
    """open_clip's eval transform as a picklable callable, for DataLoader workers.

    16-bit and float greyscale images (``I;16``, ``I``, ``F``) are first scaled
    min–max to 8 bits: PIL's ``convert("RGB")`` would clip them to white.

    ``grey_ok``: the transform gives the very same tensor for an 8-bit grey (``L``)
    image as for its RGB copy (open_clip's transforms resize and crop, then convert to
    RGB), checked once by ``load_encoder``. Resizing one band instead of three is what
    makes it worth knowing: ingest hands grey films over as ``L``. Without it an ``L``
    image is converted to RGB first.
    """

    transform: Callable[[Any], Any]
    grey_ok: bool = False

    def __call__(self, image: Any) -> Any:
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            from PIL import Image

            pixels = np.asarray(image, dtype=np.float32)
            low, high = float(pixels.min()), float(pixels.max())
            scaled = (pixels - low) * (255.0 / (high - low)) if high > low else pixels * 0
            image = Image.fromarray(scaled.round().astype(np.uint8))
        if image.mode == "L" and not self.grey_ok:
            image = image.convert("RGB")
        return self.transform(image)


def _grey_invariant(transform: Callable[[Any], Any]) -> bool:
    """True when ``transform`` maps a grey image and its RGB copy to equal tensors."""
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    probe = Image.fromarray(rng.integers(0, 256, (83, 117), dtype=np.uint8))  # mode L
    try:
        grey, rgb = transform(probe), transform(probe.convert("RGB"))
    except Exception:  # a transform that rejects L images
        return False
    return (
        isinstance(grey, torch.Tensor)
        and isinstance(rgb, torch.Tensor)
        and grey.shape == rgb.shape
        and bool(torch.equal(grey, rgb))
    )


class Encoder:
    """A loaded model, its preprocessing and its ``SpaceSpec``. Use ``load_encoder``."""

    def __init__(
        self,
        model: Any,
        preprocess: Preprocess,
        spec: SpaceSpec,
        device: str,
        tokenizer_arch: str,
        precision: str = "fp32",
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.spec = spec
        self.device = device
        self.precision = precision  # fp32, bf16 or fp16 autocast (embedding/precision.py)
        self.agreement: float | None = None  # reduced precision: least cosine with fp32
        self._channels_last = device.startswith("cuda")  # what cuDNN convolutions like best
        self._tokenizer_arch = tokenizer_arch
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return (
            f"Encoder({self.spec.name!r}, dim={self.spec.dim}, device={self.device!r}, "
            f"precision={self.precision!r})"
        )

    @property
    def arch(self) -> str:
        """The open_clip architecture (registered config) of the model: `casebase train`
        writes its config into the checkpoint and tokenizes with it."""
        return self._tokenizer_arch

    def encode_images(self, batch: Any) -> np.ndarray:
        """Embed a preprocessed batch ``(n, 3, H, W)``: float32 ``(n, dim)``, unit L2 norm
        (the model runs at ``self.precision``; the norm is taken in fp32)."""
        return self._encode_images(batch, self.precision)

    def _encode_images(self, batch: Any, precision: str) -> np.ndarray:
        import torch

        if batch.ndim != 4:
            raise InputError(f"expected a batch of shape (n, 3, H, W), got {tuple(batch.shape)}")
        with torch.inference_mode():
            with autocast(precision, self.device):
                x = batch.to(self.device, non_blocking=True)
                if self._channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                features = self.model.encode_image(x)
            return self._finite(torch.nn.functional.normalize(features.float(), dim=-1))

    def encode_pil(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images in the calling process (queries, small sets)."""
        import torch

        out = [
            self.encode_images(torch.stack([self.preprocess(im) for im in chunk]))
            for chunk in _chunks(list(images), batch_size)
        ]
        return np.concatenate(out) if out else np.empty((0, self.spec.dim), np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the model's own tokenizer: float32 ``(n, dim)``, unit L2 norm."""
        import torch

        if isinstance(texts, str):
            raise InputError("encode_text takes a list of strings, not one string")
        if self._tokenizer is None:
            import open_clip

            try:
                self._tokenizer = open_clip.get_tokenizer(self._tokenizer_arch)
            except Exception as exc:
                raise ModelError(
                    f"cannot load the tokenizer of {self.spec.name} "
                    f"({type(exc).__name__}: {exc}): {FIX_HINT}"
                ) from exc
        if not texts:
            return np.empty((0, self.spec.dim), np.float32)
        with torch.inference_mode():
            with autocast(self.precision, self.device):
                tokens = self._tokenizer(list(texts)).to(self.device)
                features = self.model.encode_text(tokens)
            return self._finite(torch.nn.functional.normalize(features.float(), dim=-1))

    def _finite(self, vectors: Any) -> np.ndarray:
        """The vectors as NumPy, or one line if any is not finite (an fp16 overflow): such
        a vector must never reach the index."""
        out = vectors.cpu().numpy()
        if not np.isfinite(out).all():
            raise ModelError(
                f"{self.spec.name} produced a non-finite vector in {self.precision}: use "
                "--precision bf16 or fp32"
            )
        return out

    def embed_stream(
        self,
        items: Iterable[T],
        load: Callable[[T], Any],
        *,
        batch_size: int = 64,
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
        with_extra: bool = False,
    ) -> Iterator[tuple[list[Any], np.ndarray, list[tuple[T, str]]]]:
        """Decode + preprocess in worker processes, embed here; batches in input order.

        Yields ``(ok_items, vectors, failed)`` per batch; see
        :func:`casebase.embedding.stream.embed_stream` for the contract.
        """
        return stream.embed_stream(
            self,
            items,
            load,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            with_extra=with_extra,
        )


def _chunks(seq: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


# --- loading -------------------------------------------------------------------------


def load_encoder(
    model: str | None = None,
    *,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    allow_random_weights: bool = False,
    precision: str = "fp32",
) -> Encoder:
    """Load an encoder (see the module docstring for what ``model`` may be).

    ``model`` and ``device`` default to the ``model`` / ``device`` settings
    (``CASEBASE_MODEL``, ``CASEBASE_DEVICE``); the device then defaults to
    ``cuda`` when torch sees a GPU, else ``cpu``. ``allow_random_weights``
    lets an open_clip architecture without ``pretrained`` run with seeded
    random weights: for timing benchmarks only, never a default. ``precision``
    (``fp32``, ``bf16``, ``fp16``) is the autocast the model runs under; a reduced one is
    checked against fp32 on a probe batch first (:mod:`casebase.embedding.precision`).
    """
    try:
        import open_clip
        import torch
    except ImportError as exc:
        raise ModelError(
            f"embedding needs torch and open_clip ({exc.name} is missing): {EMBED_EXTRA_HINT}"
        ) from exc
    if (model is None and checkpoint is None) or device is None:
        from casebase.config import load_settings

        settings = load_settings()
        model = settings.model if model is None and checkpoint is None else model
        device = device or settings.device
    device = _resolve_device(torch, device)
    check_precision(precision, device)

    if checkpoint is not None:
        if model is not None:
            raise ModelError("pass either a model or a checkpoint, not both")
        net, fields, arch = build_from_checkpoint(open_clip, Path(checkpoint))
    else:
        assert model is not None
        net, fields, arch = build_named(open_clip, model, pretrained, allow_random_weights)

    net = net.to(device).eval()
    if device.startswith("cuda"):
        net = net.to(memory_format=torch.channels_last)
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = net.visual.preprocess_cfg
    transform = image_transform_v2(
        PreprocessCfg(**{k: pp[k] for k in PreprocessCfg.__dataclass_fields__ if k in pp}),
        is_train=False,
    )
    spec = SpaceSpec(
        name=fields["name"],
        model_name=fields["model_name"],
        pretrained=fields["pretrained"],
        checkpoint_sha256=fields["sha256"],
        dim=_embed_dim(net),
        image_size=image_size(pp["size"]),
        preprocess=_describe(pp),
    )
    encoder = Encoder(
        net, Preprocess(transform, _grey_invariant(transform)), spec, device, arch, precision
    )
    if precision != "fp32":
        agreement = probe_agreement(
            lambda b: encoder._encode_images(b, "fp32"),
            lambda b: encoder._encode_images(b, precision),
            spec.image_size,
        )
        if not agreement >= MIN_AGREEMENT:  # NaN too
            raise refuse_disagreement(spec.name, precision, agreement)
        encoder.agreement = agreement
        logger.info("%s in %s: least cosine with fp32 %.5f", spec.name, precision, agreement)
    logger.info(
        "loaded %s (%s, dim %d) on %s, %s", spec.name, spec.preprocess, spec.dim, device, precision
    )
    return encoder


def _resolve_device(torch: Any, device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"invalid torch device {device!r}: {exc}") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for, but torch sees no CUDA GPU: use --device cpu"
        )
    return device


def _embed_dim(net: Any) -> int:
    dim = getattr(net.visual, "output_dim", None) or getattr(net, "embed_dim", None)
    if dim is None:
        import torch

        with torch.inference_mode():  # a timm tower (PE-Core) has no output_dim: look
            size = image_size(net.visual.preprocess_cfg["size"])
            where = next(net.parameters()).device  # the model is on its device already
            dim = net.encode_image(torch.zeros(1, 3, size, size, device=where)).shape[-1]
    return int(dim)


def _describe(pp: dict[str, Any]) -> str:
    """A short, stable description of the preprocessing (part of the space's identity)."""
    size = pp["size"] if isinstance(pp["size"], int) else "x".join(map(str, pp["size"]))
    if not isinstance(pp["size"], int) and len(set(pp["size"])) == 1:
        size = pp["size"][0]
    resize = {
        "shortest": f"resize{size}-centercrop",
        "squash": f"squash{size}",
        "longest": f"longest{size}-pad",
    }.get(pp["resize_mode"], f"{pp['resize_mode']}{size}")
    key = (tuple(round(v, 8) for v in pp["mean"]), tuple(round(v, 8) for v in pp["std"]))
    norm = _NORMS.get(key) or "norm-" + hashlib.sha1(repr(key).encode()).hexdigest()[:8]
    return f"{resize}-{pp['interpolation']}-{norm}"
