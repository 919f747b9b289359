"""The named models of casebase, as data: preset name → open_clip architecture + weights.

Like open_clip's ``pretrained.py``: a table, no code that loads anything. The presets are
the models of the seeds (MetaCLIP's successor PE-Core, BiomedCLIP, OpenAI CLIP) plus
``tiny-random``, a tiny architecture with seeded random weights for tests, named as such.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PRESETS",
    "RANDOM_SEED",
    "TINY_RANDOM_ARCH",
    "TINY_RANDOM_CFG",
    "Preset",
    "image_size",
    "preset_name_for",
    "slug",
]

RANDOM_SEED = 0


@dataclass(frozen=True)
class Preset:
    """A named model: an open_clip architecture (or ``hf-hub:`` id) plus its weights.

    ``random_seed`` is set only for test presets whose weights are generated
    locally; such a preset is named as random so nobody mistakes it for a model.
    ``requires``: Python packages beyond open_clip the model needs (checked before any
    weight lookup, so the first error names what to install).
    """

    model_name: str
    pretrained: str | None
    description: str
    random_seed: int | None = None
    requires: tuple[str, ...] = ()


TINY_RANDOM_ARCH = "casebase-tiny-random"

#: open_clip config of ``tiny-random``: a 2-layer ViT on 64x64 images (16 patches),
#: 2-layer text tower with the default BPE tokenizer. About 3.5 M parameters, most of
#: them the token embedding; hundreds of images/s on two CPU cores.
TINY_RANDOM_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

PRESETS: dict[str, Preset] = {
    "metaclip-pe-core-bigg-448": Preset(
        "PE-Core-bigG-14-448",
        "meta",
        "Perception Encoder bigG/14 at 448 px (the production system's MetaCLIP successor)",
    ),
    "biomedclip": Preset(
        "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        None,
        "BiomedCLIP ViT-B/16 + PubMedBERT, trained on PMC-15M figure-caption pairs",
        requires=("transformers",),
    ),
    "clip-vit-b-32": Preset("ViT-B-32", "openai", "OpenAI CLIP ViT-B/32"),
    "tiny-random": Preset(
        TINY_RANDOM_ARCH,
        None,
        "tiny open_clip ViT with seeded random weights: for tests only, neighbours are meaningless",
        random_seed=RANDOM_SEED,
    ),
}


def preset_name_for(model_name: str, pretrained: str | None) -> str | None:
    """The preset that names (model_name, pretrained), so one space has one name."""
    for name, preset in PRESETS.items():
        if preset.model_name == model_name and preset.pretrained == pretrained:
            return name
    return None


def slug(text: str) -> str:
    """A space name safe for SQL identifiers and partition names."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def image_size(size: int | Sequence[int]) -> int:
    """The side of a model's input from an open_clip config's ``image_size``/``size``
    (an int, or a (height, width) pair)."""
    return int(size) if isinstance(size, int) else int(max(size))
