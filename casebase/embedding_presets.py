"""Package-private helpers of ``casebase.embedding``: presets, weight files, checkpoints,
and building the open_clip model from each kind of model id.

Kept apart from ``embedding.py`` so that the public module reads as the API
(``load_encoder``, ``Encoder``, ``SpaceSpec``) and this one as the data and the
plumbing behind it. Nothing here imports torch or open_clip at import time.

Weights are resolved **local cache first, with no network call**: a model whose
files are already in the Hugging Face cache (``HF_HOME``) loads on an
air-gapped machine in the same way every time, and never silently picks up a
newer upstream revision (which would change the vectors of an existing
embedding space). Only when a file is missing do we touch the network, after a
single quick reachability probe, so that a machine without internet fails in
about a second with a message that says how to fix it, instead of sitting
through huggingface_hub's retry back-off (about 25 s per file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casebase.errors import InputError, ModelError

logger = logging.getLogger("casebase.embedding")

FIX_HINT = (
    "download the weights on a machine with internet and copy its Hugging Face cache "
    "(set HF_HOME to it), or use --checkpoint PATH, or --model tiny-random for a smoke test"
)
EMBED_EXTRA_HINT = "install the embed extra: pip install 'casebase[embed]'"
HF_TEXT_HINT = "pip install 'casebase[hf]'"

HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
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


# --- weight files -----------------------------------------------------------------


def _probe(url: str, missing: str) -> None:
    """Fail within seconds when ``url``'s host cannot be reached (one try, no back-off)."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(url, timeout=5)
    except Exception as exc:
        raise ModelError(
            f"{missing} and {url} cannot be reached ({type(exc).__name__}): {FIX_HINT}"
        ) from exc


def hf_file(repo_id: str, filenames: tuple[str, ...], what: str) -> Path:
    """Path of the first of ``filenames`` in ``repo_id``: from the cache, else downloaded."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            logger.info("using cached %s/%s", repo_id, filename)
            return Path(cached)
    missing = f"{what} is not in the Hugging Face cache ({repo_id}/{filenames[0]})"
    if constants.is_offline_mode():
        raise ModelError(f"{missing} and HF_HUB_OFFLINE is set: {FIX_HINT}")
    _probe(constants.ENDPOINT, missing)
    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as exc:  # a missing alternative is normal: try the next one
            errors.append(f"{filename}: {type(exc).__name__}")
    raise ModelError(
        f"cannot download weights of {what} from {repo_id} ({'; '.join(errors)}): {FIX_HINT}"
    )


def tag_weights(model_name: str, tag: str, what: str) -> tuple[Path, dict[str, Any]]:
    """Local weights file and pretrained config of an open_clip (name, tag) pair."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ModelError(
            f"{tag!r} is not a pretrained tag of open_clip model {model_name!r} "
            f"(known: {', '.join(tags) or 'none'}); for local weights use "
            "--checkpoint PATH"
        )
    if cfg.get("hf_hub"):
        # open_clip's form: "org/repo/" (default file names) or "org/repo/file.bin"
        repo_id, filename = cfg["hf_hub"].rstrip("/"), ""
        if not cfg["hf_hub"].endswith("/"):
            repo_id, filename = cfg["hf_hub"].rsplit("/", 1)
        names = HF_WEIGHT_FILES
        if filename.endswith(".bin"):
            names = (filename[: -len(".bin")] + ".safetensors", filename)
        elif filename:
            names = (filename,)
        return hf_file(repo_id, names, what), cfg
    url = cfg.get("url", "")
    cached = Path.home() / ".cache" / "clip" / Path(url).name
    if cached.is_file():
        return cached, cfg
    _probe(url, f"{what} is not in {cached.parent}")
    try:  # checks the sha256 embedded in the URL
        return Path(open_clip.download_pretrained_from_url(url)), cfg
    except Exception as exc:
        raise ModelError(
            f"cannot download weights of {what} from {url} ({type(exc).__name__}): {FIX_HINT}"
        ) from exc


def preprocess_overrides(cfg: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing keys of a pretrained config (open_clip drops them for file paths)."""
    keys = ("mean", "std", "interpolation", "resize_mode", "fill_color")
    return {k: cfg[k] for k in keys if k in cfg}


# --- local checkpoints ---------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointConfig:
    """The sibling JSON of a ``.pt`` checkpoint (see ``casebase.embedding``)."""

    weights: Path
    config_path: Path
    model_name: str | None
    model_cfg: dict[str, Any] | None
    image_size: int
    quick_gelu: bool
    preprocess_cfg: dict[str, Any]
    base: str | None
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
            "documented in casebase.embedding"
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
    actual = sha256_of(checkpoint)
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


# --- building models -------------------------------------------------------------------


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


def one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    text = re.sub(r"\s+", " ", text).strip().rstrip(":") or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def image_size(size: int | Sequence[int]) -> int:
    return int(size) if isinstance(size, int) else int(max(size))
