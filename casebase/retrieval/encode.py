"""Turning a query (image, text) into a vector of a space's own model."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np

from casebase.db.spaces import Space
from casebase.errors import InputError, ModelError


@lru_cache(maxsize=4)
def _encoder(
    name: str,
    model_name: str,
    pretrained: str | None,
    checkpoint: str | None,
    device: str | None,
    precision: str = "fp32",
):
    from casebase.embedding import PRESETS, load_encoder

    if checkpoint:
        return load_encoder(checkpoint=checkpoint, device=device, precision=precision)
    if name in PRESETS:
        return load_encoder(name, device=device, precision=precision)
    return load_encoder(model_name, pretrained=pretrained, device=device, precision=precision)


def encoder_for_space(space: Space, device: str | None = None, precision: str = "fp32"):
    """The encoder that made a space's vectors; a mismatch is an error, never a guess.
    (``precision`` is how it computes, not what its vectors mean: not checked.)"""
    encoder = _encoder(
        space.name, space.model_name, space.pretrained, space.checkpoint_path, device, precision
    )
    if encoder.spec.dim != space.dim or (
        space.checkpoint_sha256 and encoder.spec.checkpoint_sha256 != space.checkpoint_sha256
    ):
        raise ModelError(
            f"the model loaded for space {space.name!r} does not match it "
            f"(dim {encoder.spec.dim} vs {space.dim}); was the checkpoint replaced?"
        )
    return encoder


def load_query_image(image):
    """A path (image or DICOM), raw bytes, or a PIL image → an RGB PIL image."""
    from PIL import Image

    from casebase.imaging.images import load_image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, bytes | bytearray):
        try:
            with Image.open(io.BytesIO(image)) as img:
                img.load()
                return img.convert("RGB")
        except Exception as exc:
            raise InputError(f"the query image bytes are not a readable image ({exc})") from exc
    if isinstance(image, str | Path):
        return load_image(Path(image))
    raise InputError(f"an image query must be a path, bytes or a PIL image, not {type(image)}")


def image_vector(space: Space, image, device: str | None = None) -> np.ndarray:
    picture = load_query_image(image)  # a bad file fails before a model is loaded
    return encoder_for_space(space, device).encode_pil([picture])[0]


def text_vector(space: Space, text: str, device: str | None = None) -> np.ndarray:
    if not text or not text.strip():
        raise InputError("the text query is empty")
    return encoder_for_space(space, device).encode_text([text])[0]
