"""Candidate images as annotators get them: the pixels only.

Gallery PNGs carry the generator's metadata (a text chunk with its name, settings and, for the shapes members,
the mistakes it made on purpose); file names and paths name the generator too. Ranking is blind only if none of
that reaches the annotator, so the server re-encodes every image it shows from its pixels alone.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image

from itercomp.errors import ItercompError


def pixels_only(path: str | Path) -> Image.Image:
    """The image at `path` as a new image with no metadata (no text chunks, EXIF, ICC profile or palette)."""
    try:
        with Image.open(path) as image:
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            converted = image.convert("RGBA" if alpha else "RGB")
    except (OSError, ValueError) as e:
        raise ItercompError(f"cannot read image {path}: {e}") from None
    return Image.frombytes(converted.mode, converted.size, converted.tobytes())


def served_png(path: str | Path) -> bytes:
    """PNG bytes of `pixels_only(path)`, cached while the file is unchanged."""
    stat = Path(path).stat()
    return _png(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=512)
def _png(path: str, _mtime_ns: int, _size: int) -> bytes:
    buffer = io.BytesIO()
    pixels_only(path).save(buffer, format="PNG")
    return buffer.getvalue()
