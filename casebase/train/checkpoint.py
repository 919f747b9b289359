"""A training run's own files and starting point: the resumable state and the base model.

A run directory holds two things with different jobs:

- ``model.pt`` + ``model.json``: the best model so far, written in the format
  ``load_encoder(checkpoint=...)`` reads, by :mod:`casebase.embedding.checkpoint`
  (which owns reading and writing it), plus the training provenance (base, text
  source, held-out P@k history). This is what ``casebase spaces add --checkpoint``
  registers.
- ``last.pt`` (here): the state after the last *completed* epoch (model, optimizer,
  the loss head, RNG, history, early-stopping counters). A re-run with the same
  ``--out`` resumes from it. It is a training artefact, never an embedding space.
  It is written atomically like the checkpoint (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casebase.embedding.checkpoint import ModelConfig, atomic_write, model_config
from casebase.errors import CasebaseError, InputError
from casebase.train.presets import ARCHITECTURES, SMALL_RESNET_CFG, architecture, with_image_size

__all__ = [
    "SMALL_RESNET_CFG",
    "STATE_FILE",
    "Base",
    "check_resumable",
    "load_base",
    "load_state",
    "save_state",
]

STATE_FILE = "last.pt"


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write the resumable training state ``out/last.pt`` atomically."""
    import torch

    atomic_write(out / STATE_FILE, lambda fh: torch.save(state, fh))


def load_state(out: Path) -> dict[str, Any] | None:
    """The saved training state of ``out``, or None for a fresh run directory.

    Loaded with ``weights_only=True``: the state holds tensors and plain Python
    values only, so a tampered file cannot run code.
    """
    import torch

    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CasebaseError(
            f"cannot read the training state {path} ({type(exc).__name__}): delete it to "
            "start over, or use another --out"
        ) from exc


def check_resumable(out: Path, saved: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """A run directory resumes only the run it was started for (same data, base, seed).

    A setting the saved run did not record (a run started by an older casebase, before
    the setting was part of the fingerprint) is not compared: the run resumes as before.
    """
    have = saved.get("fingerprint", {})
    diff = sorted(k for k in fingerprint if k in have and have[k] != fingerprint[k])
    if diff:
        details = ", ".join(f"{k}: {have.get(k)!r} → {fingerprint.get(k)!r}" for k in diff)
        raise InputError(
            f"{out} holds a training run with other settings ({details}): use another --out, "
            f"or delete {out / STATE_FILE} to start over"
        )


# --- the model training starts from ---------------------------------------------------


@dataclass(frozen=True)
class Base:
    """The model training starts from, built but not yet trained."""

    model: Any  # an open_clip CLIP model, on CPU
    arch: str  # its registered open_clip architecture (for the tokenizer)
    name: str  # provenance: a preset, a checkpoint path, a config file
    random_init: bool  # True when no pretrained weights were loaded
    config: ModelConfig


def load_base(
    base: str | None,
    space: Any,
    *,
    pretrained: str | None,
    seed: int,
    image_size: int | None = None,
) -> Base:
    """Build the starting model: the space's own model (``base=None``), a preset, an
    open_clip name (+ ``pretrained``), a ``.pt`` checkpoint, or — random initialisation,
    seeded, for when no weights can be had — a training architecture by name
    (``small-resnet``, ``small-vit``: :mod:`casebase.train.presets`) or a ``.json``
    open_clip model config. ``image_size`` resizes the input of a random-init
    architecture; a model with weights keeps the size it was trained at."""
    from casebase.embedding import PRESETS, load_encoder

    if base in ARCHITECTURES:
        return _from_config(architecture(base, image_size), base, seed)
    if base is not None and base.endswith(".json"):
        raw = _read_config_file(Path(base))
        if image_size is not None:
            raw = with_image_size(raw, image_size)
        return _from_config(raw, base, seed)
    if image_size is not None:
        raise InputError(
            "--image-size applies to a randomly initialised architecture (--base "
            f"{' / '.join(ARCHITECTURES)} or a .json config); {base or 'the space model'} "
            "keeps the input size its weights were trained at"
        )
    if base is None:
        if space.checkpoint_path:
            base = space.checkpoint_path
        elif space.name in PRESETS:
            base = space.name
        else:
            base, pretrained = space.model_name, space.pretrained
    if base.endswith(".pt") or Path(base).is_file():
        encoder = load_encoder(checkpoint=base, device="cpu")
        random_init = False
    else:
        encoder = load_encoder(base, pretrained=pretrained, device="cpu")
        preset = PRESETS.get(base)
        random_init = preset is not None and preset.random_seed is not None
    model = encoder.model
    return Base(model, encoder.arch, base, random_init, model_config(model, encoder.arch))


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the model config {path}: {exc}") from exc
    model_cfg = raw.get("model_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(
        model_cfg
    ):
        raise InputError(
            f"{path} is not an open_clip model config (embed_dim, vision_cfg, "
            "text_cfg; optionally under 'model_cfg', with 'preprocess_cfg')"
        )
    return raw


def _from_config(raw: dict[str, Any], name: str, seed: int) -> Base:
    import hashlib

    import open_clip
    import torch

    from casebase.embedding.build import quiet_random_init_warning, register_arch

    model_cfg = raw.get("model_cfg", raw)
    digest = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:12]
    arch = f"casebase-train-{digest}"
    register_arch(arch, model_cfg)
    try:
        with torch.random.fork_rng(devices=[]), quiet_random_init_warning():
            torch.manual_seed(seed)
            model = open_clip.create_model(
                arch,
                pretrained=None,
                pretrained_text=False,
                pretrained_image=False,
                device="cpu",
                force_preprocess_cfg=dict(raw.get("preprocess_cfg") or {}),
            )
    except Exception as exc:
        raise InputError(
            f"open_clip cannot build the model {name} ({type(exc).__name__}: {exc})"
        ) from exc
    return Base(model, arch, name, True, model_config(model, arch))
