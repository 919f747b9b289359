"""Finding a model's weight files: the Hugging Face cache first, with no network call.

A model whose files are already in the Hugging Face cache (``HF_HOME``) loads on an
air-gapped machine in the same way every time, and never silently picks up a newer
upstream revision (which would change the vectors of an existing embedding space). Only
when a file is missing do we touch the network, after a single quick reachability probe,
so that a machine without internet fails in about a second with a message that says how
to fix it, instead of sitting through huggingface_hub's retry back-off (about 25 s per
file). Files fetched by URL are checked against the sha256 open_clip embeds in the URL;
local checkpoints against the sha256 of their config (:mod:`casebase.embedding.checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from casebase.embedding.messages import FIX_HINT
from casebase.errors import ModelError

__all__ = ["HF_WEIGHT_FILES", "hf_file", "preprocess_overrides", "tag_weights"]

logger = logging.getLogger(__name__)

HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


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
        names: tuple[str, ...] = HF_WEIGHT_FILES
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
