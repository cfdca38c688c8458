"""Image grids with captions: what people look at instead of reading numbers."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def make_grid(
    images, captions=None, columns: int = 6, scale: int = 4, caption_lines: int = 4, title: str | None = None
) -> Image.Image:
    """Tiles (nearest-neighbour upscaled so pixels stay crisp), each with its caption wrapped underneath."""
    tiles = [
        Image.fromarray(np.asarray(im, dtype=np.uint8)) if not isinstance(im, Image.Image) else im for im in images
    ]
    if not tiles:
        raise ValueError("make_grid needs at least one image")
    w, h = tiles[0].size
    tile_w, tile_h = w * scale, h * scale
    font = _font(11)
    chars = max(8, tile_w // 6)
    line_h = 13
    cap_h = caption_lines * line_h + 4 if captions else 0
    title_h = 22 if title else 0
    rows = (len(tiles) + columns - 1) // columns
    pad = 4
    canvas = Image.new("RGB", (columns * (tile_w + pad) + pad, title_h + rows * (tile_h + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill="black", font=_font(14))
    for k, tile in enumerate(tiles):
        x = pad + (k % columns) * (tile_w + pad)
        y = title_h + pad + (k // columns) * (tile_h + cap_h + pad)
        canvas.paste(tile.convert("RGB").resize((tile_w, tile_h), Image.NEAREST), (x, y))
        if captions:
            lines = textwrap.wrap(captions[k], chars)[:caption_lines]
            for i, line in enumerate(lines):
                draw.text((x, y + tile_h + 2 + i * line_h), line, fill="black", font=font)
    return canvas
