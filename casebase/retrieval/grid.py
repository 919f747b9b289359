"""A contact sheet: the query and its hits, with distance and a one-line impression."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from casebase.retrieval.hits import Hit

TILE = 224
CAPTION = 58
COLUMNS = 5


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _tile(image, label: str, lines: Sequence[str], border: tuple[int, int, int]):
    from PIL import Image, ImageDraw, ImageOps

    tile = Image.new("RGB", (TILE, TILE + CAPTION), (20, 20, 20))
    if image is not None:
        thumb = ImageOps.contain(image.convert("RGB"), (TILE - 8, TILE - 8))
        tile.paste(thumb, ((TILE - thumb.width) // 2, (TILE - thumb.height) // 2))
    else:
        ImageDraw.Draw(tile).text((10, TILE // 2), "image unavailable", fill=(200, 80, 80))
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, TILE - 1, TILE + CAPTION - 1], outline=border, width=3)
    draw.text((6, TILE + 2), label, fill=(255, 255, 255), font=_font(13))
    for i, line in enumerate(lines[:2]):
        draw.text((6, TILE + 20 + 16 * i), line, fill=(190, 190, 190), font=_font(11))
    return tile


def _open(path: str | None):
    if not path:
        return None
    from casebase.errors import InputError
    from casebase.imaging.images import load_image

    try:
        return load_image(Path(path))
    except (InputError, OSError):
        return None


def contact_sheet(
    out: str | Path,
    *,
    query_image,
    query_label: str,
    hits: Sequence[Hit],
    image_paths: dict[int, str],
) -> Path:
    """Write a PNG grid: the query first (blue border), then each hit in rank order."""
    from PIL import Image

    tiles = [_tile(query_image, f"query: {query_label}"[:30], [], (70, 130, 230))]
    for hit in hits:
        impression = " ".join((hit.impression or "no report").split())
        lines = textwrap.wrap(impression, 34)[:2]
        label = f"#{hit.rank} {hit.study_id}"[:22] + f"  d={hit.distance:.3f}"
        path = image_paths.get(hit.image_id) if hit.image_id is not None else None
        tiles.append(_tile(_open(path), label, lines, (90, 90, 90)))
    rows = (len(tiles) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * TILE, rows * (TILE + CAPTION)), (0, 0, 0))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % COLUMNS) * TILE, (i // COLUMNS) * (TILE + CAPTION)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
