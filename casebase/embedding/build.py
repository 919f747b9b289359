"""Building the open_clip model for each kind of model id: a preset, an ``hf-hub:`` id, an
architecture + pretrained tag, or a local checkpoint.

Every path ends in weights that were really loaded, or in a ``ModelError`` with a fix:
random weights come only from a ``random_seed`` preset (``tiny-random``) or the explicit
``allow_random`` (timing benchmarks), and both log a WARNING. open_clip is passed in by
:func:`casebase.embedding.encoder.load_encoder`, which imports it; nothing here imports
torch or open_clip at import time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from casebase.embedding.checkpoint import check_state_dict, read_checkpoint_config
from casebase.embedding.messages import HF_TEXT_HINT, one_line
from casebase.embedding.presets import (
    PRESETS,
    RANDOM_SEED,
    TINY_RANDOM_CFG,
    image_size,
    preset_name_for,
    slug,
)
from casebase.embedding.weights import HF_WEIGHT_FILES, hf_file, preprocess_overrides, tag_weights
from casebase.errors import ModelError

__all__ = [
    "build_from_checkpoint",
    "build_named",
    "quiet_random_init_warning",
    "register_arch",
]

logger = logging.getLogger(__name__)


def register_arch(name: str, model_cfg: dict[str, Any]) -> None:
    """Register an open_clip architecture config under ``name`` (idempotent).

    open_clip only reads configs from JSON files (``add_model_config``), so the
    config is written to a temporary directory that is removed again right
    away: open_clip keeps the parsed config in its registry.
    """
    import tempfile

    import open_clip

    if open_clip.get_model_config(name) == model_cfg:
        return
    with tempfile.TemporaryDirectory(prefix="casebase-open_clip-") as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(model_cfg))
        open_clip.add_model_config(path)
    if open_clip.get_model_config(name) is None:
        raise ModelError(
            f"open_clip rejected the architecture config {name!r}: it needs "
            "embed_dim, vision_cfg and text_cfg"
        )


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def quiet_random_init_warning() -> Iterator[None]:
    """Drop open_clip's root-logger "Model initialized randomly" while we build a model
    whose weights we load (or report) ourselves, so the log says exactly one true thing."""
    root, flt = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _missing(module: str) -> bool:
    """Whether ``module`` cannot be imported, without importing it (transformers is slow)."""
    if module in sys.modules:
        return sys.modules[module] is None
    return importlib.util.find_spec(module) is None


def _require(modules: Sequence[str], what: str, why: str) -> None:
    absent = [m for m in modules if _missing(m)]
    if absent:
        raise ModelError(
            f"{what} needs the Python package {', '.join(absent)} ({why}): {HF_TEXT_HINT}"
        )


def build_named(
    open_clip: Any, model: str, pretrained: str | None, allow_random: bool
) -> tuple[Any, dict[str, Any], str]:
    preset = PRESETS.get(model)
    if preset is not None:
        if pretrained is not None:
            raise ModelError(f"preset {model!r} already names its weights: drop --pretrained")
        _require(
            preset.requires,
            f"model {model!r}",
            "its text tower is a Hugging Face transformers model",
        )
        arch, tag = preset.model_name, preset.pretrained
        if preset.random_seed is not None:
            register_arch(arch, TINY_RANDOM_CFG)
            return (
                _random(open_clip, arch, model, preset.random_seed),
                _spec_fields(model, arch, None),
                arch,
            )
    else:
        arch, tag = model, pretrained
    name = preset_name_for(arch, tag)
    what = f"model {name or arch!r}"

    if arch.startswith("hf-hub:"):
        if tag is not None:
            raise ModelError(f"{arch} carries its own weights: drop --pretrained")
        repo = arch[len("hf-hub:") :]
        config = hf_file(repo, ("open_clip_config.json",), what)
        weights = hf_file(repo, HF_WEIGHT_FILES, what)
        try:
            hub_cfg = json.loads(config.read_text())
            local_arch = "casebase-hf-" + slug(repo)
            register_arch(local_arch, hub_cfg["model_cfg"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"bad open_clip_config.json in {repo}: {exc}") from exc
        text_tower = (hub_cfg["model_cfg"].get("text_cfg") or {}).get("hf_model_name")
        if text_tower:
            _require(
                ("transformers",), what, f"its text tower is the Hugging Face model {text_tower}"
            )
        net = _create(
            open_clip,
            local_arch,
            weights,
            what,
            force_preprocess_cfg=hub_cfg.get("preprocess_cfg") or {},
        )
        return net, _spec_fields(name or "hf-" + slug(repo), arch, None), local_arch

    if open_clip.get_model_config(arch) is None:
        raise ModelError(
            f"unknown model {arch!r}: use a preset ({', '.join(PRESETS)}), an hf-hub: id, an "
            "open_clip architecture (open_clip.list_models()) with --pretrained TAG, "
            "or --checkpoint PATH"
        )
    if tag is None:
        if allow_random:
            random_name = "random-" + slug(arch)
            return (
                _random(open_clip, arch, random_name, RANDOM_SEED),
                _spec_fields(random_name, arch, None),
                arch,
            )
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelError(
            f"model {arch!r} needs --pretrained TAG (known: {tags}); "
            "casebase never uses random weights silently"
        )
    weights, tag_cfg = tag_weights(arch, tag, what)
    net = _create(
        open_clip,
        arch,
        weights,
        what,
        force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        force_preprocess_cfg=preprocess_overrides(tag_cfg),
    )
    return net, _spec_fields(name or slug(f"{arch}-{tag}"), arch, tag), arch


def _create(open_clip: Any, arch: str, weights: Path, what: str, **kwargs: Any) -> Any:
    """open_clip.create_model with required weights; every failure becomes ModelError."""
    try:
        return open_clip.create_model(
            arch,
            pretrained=str(weights),
            require_pretrained=True,
            pretrained_text=False,
            device="cpu",
            **kwargs,
        )
    except Exception as exc:
        raise ModelError(
            f"cannot load {what} from {weights} ({type(exc).__name__}: {one_line(exc)[:200]})"
        ) from exc


def _random(open_clip: Any, arch: str, name: str, seed: int) -> Any:
    """Seeded random init on CPU (same weights in every process), global RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]), quiet_random_init_warning():
        torch.manual_seed(seed)
        net = open_clip.create_model(
            arch, pretrained=None, pretrained_text=False, pretrained_image=False, device="cpu"
        )
    logger.warning(
        "model %r has random weights (seed %d): its neighbours are meaningless; "
        "use it only for smoke tests and timing",
        name,
        seed,
    )
    return net


def build_from_checkpoint(open_clip: Any, path: Path) -> tuple[Any, dict[str, Any], str]:
    ck = read_checkpoint_config(path)
    if ck.model_cfg is not None:
        arch = f"casebase-ckpt-{ck.sha256[:12]}"
        register_arch(arch, ck.model_cfg)
    else:
        arch = str(ck.model_name)
        if open_clip.get_model_config(arch) is None:
            raise ModelError(
                f"checkpoint config {ck.config_path} names {arch!r}, which is "
                "not an open_clip architecture"
            )
    arch_size = open_clip.get_model_config(arch)["vision_cfg"].get("image_size")
    if arch_size is not None and image_size(arch_size) != ck.image_size:
        raise ModelError(
            f"checkpoint config {ck.config_path} says image_size {ck.image_size} "
            f"but architecture {arch!r} has {arch_size}"
        )
    try:
        with quiet_random_init_warning():  # weights are loaded just below
            net = open_clip.create_model(
                arch,
                pretrained=None,
                pretrained_text=False,
                pretrained_image=False,
                device="cpu",
                force_quick_gelu=ck.quick_gelu,
                force_preprocess_cfg=ck.preprocess_cfg,
            )
        from open_clip.factory import load_state_dict

        state = load_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"cannot load checkpoint {path} ({type(exc).__name__}: {one_line(exc)[:200]})"
        ) from exc
    check_state_dict(net, state, path)
    net.load_state_dict(state, strict=True)
    fields = _spec_fields(f"ckpt-{ck.sha256[:12]}", ck.model_name or arch, None)
    return net, {**fields, "sha256": ck.sha256}, arch


def _spec_fields(name: str, model_name: str, pretrained: str | None) -> dict[str, Any]:
    return {"name": name, "model_name": model_name, "pretrained": pretrained, "sha256": None}
