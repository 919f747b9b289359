"""Local model checkpoints: the format ``load_encoder(checkpoint=...)`` reads and
``casebase train`` writes, both here so that the two can never drift apart.

A checkpoint is two files, same stem: ``model.pt`` holds ``model.state_dict()``
(optionally under a ``"state_dict"`` key; loaded with ``weights_only=True`` and it must
match the architecture exactly, no silent position-embedding resizing), and
``model.json`` its config::

    {
      "model_name": "ViT-B-32",       # an open_clip architecture, or instead:
      "model_cfg": {...},             #   a full open_clip config (embed_dim, vision_cfg,
                                      #   text_cfg), for architectures open_clip lacks
      "image_size": 224,              # must equal the architecture's image size
      "quick_gelu": true,             # optional; true for models from OpenAI weights
      "preprocess_cfg": {             # optional open_clip preprocessing overrides
        "mean": [0.481, 0.458, 0.408], "std": [0.269, 0.261, 0.276],
        "interpolation": "bicubic", "resize_mode": "shortest"},
      "base": "clip-vit-b-32",        # what it was fine-tuned from (provenance only)
      "sha256": "<sha256 of model.pt>"  # required; checked at load, names the space
    }

Every file is written to a temporary name in the same directory, flushed to disk and
renamed over the old one (``os.replace`` is atomic on POSIX), so a run killed at any
moment leaves either the old file or the new one, never half of one. ``model.pt`` is
replaced before ``model.json``: a crash between the two leaves a pair whose sha256
disagrees, which loading reports as an error; it never loads the wrong weights silently.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from casebase.embedding.presets import image_size
from casebase.errors import CasebaseError, ModelError
from casebase.imaging.files import sha256_file

__all__ = [
    "MODEL_FILE",
    "CheckpointConfig",
    "ModelConfig",
    "atomic_write",
    "check_state_dict",
    "model_config",
    "read_checkpoint_config",
    "write_checkpoint",
    "write_config",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointConfig:
    """The sibling JSON of a ``.pt`` checkpoint (see the module docstring)."""

    weights: Path
    config_path: Path
    model_name: str | None
    model_cfg: dict[str, Any] | None
    image_size: int
    quick_gelu: bool
    preprocess_cfg: dict[str, Any]
    base: str | None
    sha256: str


def read_checkpoint_config(checkpoint: Path) -> CheckpointConfig:
    """Read and check ``<name>.json`` beside ``checkpoint``; verify the file's sha256."""
    if not checkpoint.is_file():
        raise ModelError(
            f"checkpoint {checkpoint} does not exist: pass the .pt file written "
            "by `casebase train` (with its .json beside it)"
        )
    config_path = checkpoint.with_suffix(".json")
    try:
        raw = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"checkpoint {checkpoint} has no config {config_path}: write it as "
            "documented in casebase.embedding.checkpoint"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read checkpoint config {config_path}: {exc}") from exc
    if not isinstance(raw, dict) or ("model_name" in raw) == ("model_cfg" in raw):
        raise ModelError(
            f"checkpoint config {config_path} needs exactly one of 'model_name' and 'model_cfg'"
        )
    missing = [key for key in ("image_size", "sha256") if key not in raw]
    if missing:
        raise ModelError(f"checkpoint config {config_path} lacks {', '.join(missing)}")
    actual = sha256_file(checkpoint)
    if str(raw["sha256"]).lower() != actual:
        raise ModelError(
            f"checkpoint {checkpoint} has sha256 {actual[:12]}…, its config "
            f"{config_path} says {str(raw['sha256'])[:12]}…: wrong or corrupt file"
        )
    return CheckpointConfig(
        weights=checkpoint,
        config_path=config_path,
        model_name=raw.get("model_name"),
        model_cfg=raw.get("model_cfg"),
        image_size=int(raw["image_size"]),
        quick_gelu=bool(raw.get("quick_gelu", False)),
        preprocess_cfg=dict(raw.get("preprocess_cfg") or {}),
        base=raw.get("base"),
        sha256=actual,
    )


def check_state_dict(model: Any, state_dict: dict[str, Any], source: Path) -> None:
    """Raise ModelError naming ``source`` unless its keys and shapes match ``model``.

    Stricter than open_clip's loader, which would silently interpolate position
    embeddings of another image size.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        k
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} of another shape (e.g. {k}: "
            f"{tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)})"
        )
    raise ModelError(
        f"weights in {source} do not match the architecture in its config: {'; '.join(parts)}"
    )


# --- writing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """How to rebuild a trained architecture: the ``model_cfg`` half of ``model.json``."""

    model_cfg: dict[str, Any]
    image_size: int
    quick_gelu: bool
    preprocess_cfg: dict[str, Any]


def model_config(model: Any, arch: str) -> ModelConfig:
    """What ``model.json`` needs to rebuild ``model`` without open_clip's registry entry."""
    import open_clip
    from open_clip.transformer import QuickGELU

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise CasebaseError(f"open_clip has no config for architecture {arch!r}")
    pp = model.visual.preprocess_cfg
    return ModelConfig(
        model_cfg=copy.deepcopy(cfg),
        image_size=image_size(pp["size"]),
        quick_gelu=any(isinstance(m, QuickGELU) for m in model.modules()),
        preprocess_cfg={k: pp[k] for k in _PREPROCESS_KEYS if k in pp},
    )


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write via ``write(fileobj)`` to a temporary sibling, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the model from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checkpoint(
    out: Path, model: Any, config: ModelConfig, provenance: dict[str, Any]
) -> tuple[Path, str]:
    """Write ``out/model.pt`` and ``out/model.json``; return the .pt path and its sha256."""
    import torch

    weights = out / MODEL_FILE
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda fh: torch.save(state, fh))
    sha = sha256_file(weights)
    write_config(out, config, provenance, sha)
    logger.info("checkpoint written: %s (sha256 %s…)", weights, sha[:12])
    return weights, sha


def write_config(out: Path, config: ModelConfig, provenance: dict[str, Any], sha: str) -> None:
    """Rewrite ``model.json`` with newer provenance (e.g. the full P@k history); the
    weights and their sha256 are unchanged."""
    document = {
        "model_cfg": config.model_cfg,
        "image_size": config.image_size,
        "quick_gelu": config.quick_gelu,
        "preprocess_cfg": config.preprocess_cfg,
        **provenance,
        "sha256": sha,
    }
    text = json.dumps(document, indent=2, default=str).encode()
    atomic_write((out / MODEL_FILE).with_suffix(".json"), lambda fh: fh.write(text))
