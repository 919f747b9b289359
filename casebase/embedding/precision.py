"""The numeric precision a model embeds at: ``fp32``, or ``bf16`` / ``fp16`` autocast.

Why: a ViT-bigG-sized model at 448 px is compute-bound; on a GPU with bf16 tensor
cores it runs several times faster under autocast than in fp32 (seed 000 spent ~900
GPU-hours embedding in fp32). Stored vectors are float32 either way, normalised in fp32
after the model.

Precision is *not* part of an embedding space's identity (``SpaceSpec``): a space is a
model and its preprocessing, i.e. what a vector means; precision is rounding error in
computing it. It must stay well below the distances that rank neighbours, and
``load_encoder`` checks that it does for the model at hand before the first vector is
stored: on a fixed probe batch, every reduced-precision vector must have cosine >=
:data:`MIN_AGREEMENT` with its fp32 twin, else the load is refused in one line. Making
precision part of the identity would split one archive into spaces that cannot be
searched together, for rounding error: a GPU job in bf16 could not add a month to a
space loaded in fp32, and image queries (embedded in fp32 on the client's CPU) could not
search a bf16 space. The precision of each batch is recorded in its stats instead.

fp16 on a CPU runs where this torch supports it, under the same check; bf16 and fp16
on a CUDA device need hardware support (bf16: compute capability >= 8.0), else one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from casebase.errors import ConfigError, ModelError

__all__ = ["MIN_AGREEMENT", "PRECISIONS", "autocast", "check_precision", "probe_agreement"]

PRECISIONS = ("fp32", "bf16", "fp16")
#: The least cosine a reduced-precision vector may have with its fp32 twin.
MIN_AGREEMENT = 0.99
_PROBE_IMAGES = 4


def dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check_precision(precision: str, device: str) -> str:
    """``precision`` when this torch can autocast to it on ``device``; else one line."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return precision
    import torch

    kind = torch.device(device).type
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU cannot compute in bf16 (it needs compute capability >= 8.0)")
    try:
        with torch.autocast(kind, dtype=dtype(precision)):
            torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ConfigError(
            f"this torch ({torch.__version__}) cannot compute in {precision} on {kind} "
            f"({str(exc).splitlines()[0][:120]}): use --precision bf16 or fp32"
        ) from exc
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: str) -> Iterator[None]:
    """torch's autocast to ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        yield
        return
    import torch

    with torch.autocast(torch.device(device).type, dtype=dtype(precision)):
        yield


def probe_agreement(encode_fp32: Any, encode_reduced: Any, image_size: int) -> float:
    """The least cosine between the fp32 and reduced-precision vectors of a fixed probe
    batch (seeded smooth noise: images, not constant tensors)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(_PROBE_IMAGES, 3, 8, 8, generator=gen)
    probe = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")
    probe = (probe - 0.5) / 0.25  # about the scale of a normalised image
    want = np.asarray(encode_fp32(probe), dtype=np.float64)
    got = np.asarray(encode_reduced(probe), dtype=np.float64)
    if not np.isfinite(got).all():
        return float("nan")
    cos = (want * got).sum(1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    return float(cos.min())


def refuse_disagreement(name: str, precision: str, agreement: float) -> ModelError:
    return ModelError(
        f"{name} in {precision} drifts from fp32 (least cosine {agreement:.4f} on a probe "
        f"batch, need >= {MIN_AGREEMENT}): use --precision "
        + ("bf16 or fp32" if precision == "fp16" else "fp32")
    )
