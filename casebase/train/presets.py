"""Architectures `casebase train` can start from without weights, by name (``--base``).

When no pretrained weights can be had (offline, or no model of the domain), training
starts from random initialisation, and the model must be small enough to learn on a
few CPU cores in minutes. These presets are open_clip configs, as data, so nobody has
to write one by hand:

- ``small-resnet``: open_clip's ModifiedResNet (CLIP's RN50 design), width 16, one
  block per stage (about 1.3 M vision parameters). The recipe's default: a
  convolutional network learns fine texture (joint margins, trabeculae) from a thousand
  images, where a transformer needs far more.
- ``small-vit``: a 4-layer ViT, width 128, 16 px patches (about 0.8 M vision parameters
  at 128 px).

Both have a 1-layer text tower (labels are short), letterbox the film into a square
(``resize_mode: longest``: a non-square film keeps its aspect and all its anatomy, the
rest is black like a radiograph's background), and default to 128 px: the size at which
a knee's joint space is a few pixels wide. ``image_size`` overrides it (a multiple of 32
for the ResNet, of 16 for the ViT).
"""

from __future__ import annotations

import copy
from typing import Any

from casebase.errors import InputError

__all__ = ["ARCHITECTURES", "DEFAULT_IMAGE_SIZE", "SMALL_RESNET_CFG", "architecture"]

DEFAULT_IMAGE_SIZE = 128

_TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}
_LETTERBOX = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "longest",
}

# The small ResNet at 64 px, squashed: what the demo and benchmarks/pneumoniamnist.py
# trained before the presets existed (square inputs, where squash and letterbox agree).
SMALL_RESNET_CFG: dict[str, Any] = {
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
        "text_cfg": dict(_TEXT_CFG),
    },
    "preprocess_cfg": {**_LETTERBOX, "resize_mode": "squash"},
}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "small-resnet": {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {
                "image_size": DEFAULT_IMAGE_SIZE,
                "layers": [1, 1, 1, 1],
                "width": 16,
                "head_width": 32,
            },
            "text_cfg": dict(_TEXT_CFG),
        },
        "preprocess_cfg": dict(_LETTERBOX),
    },
    "small-vit": {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {
                "image_size": DEFAULT_IMAGE_SIZE,
                "layers": 4,
                "width": 128,
                "head_width": 32,
                "patch_size": 16,
                "mlp_ratio": 2.0,
            },
            "text_cfg": dict(_TEXT_CFG),
        },
        "preprocess_cfg": dict(_LETTERBOX),
    },
}

_STRIDE = {"small-resnet": 32, "small-vit": 16}


def architecture(name: str, image_size: int | None = None) -> dict[str, Any]:
    """The config of preset ``name`` (a copy), at ``image_size`` when given."""
    cfg = copy.deepcopy(ARCHITECTURES[name])
    if image_size is not None:
        stride = _STRIDE[name]
        if image_size < 2 * stride or image_size % stride:
            raise InputError(
                f"--image-size for {name} must be a multiple of {stride} (at least "
                f"{2 * stride}), got {image_size}"
            )
        cfg["model_cfg"]["vision_cfg"]["image_size"] = image_size
    return cfg


def with_image_size(config: dict[str, Any], image_size: int) -> dict[str, Any]:
    """An open_clip config (``model_cfg`` + ``preprocess_cfg``, or a bare model config)
    at another input size: for a random-init architecture read from a .json file."""
    cfg = copy.deepcopy(config)
    model_cfg = cfg.get("model_cfg", cfg)
    if image_size < 32:
        raise InputError(f"--image-size must be at least 32, got {image_size}")
    model_cfg["vision_cfg"]["image_size"] = image_size
    return cfg
