"""Shape masks and the measurable geometry of a drawn object — shared by the renderer and the oracle.

Both sides use the same predicate functions, so whatever the renderer lays out the oracle reads back as true.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy import ndimage

from itercomp.world.vocab import SHAPES

# Object extents in pixels on the default 32 px canvas; other canvases scale them.
BASE_CANVAS = 32
EXTENT = {"small": 8, "large": 14}
LARGE_MIN_EXTENT = 11.0  # between the two extents: what the oracle calls large
BIGGER_MARGIN = 3.0  # "bigger than" needs this many more pixels of extent
SPATIAL_MARGIN = 2.0  # centre offset along the dominant axis for left/right/above/below
TOUCH_GAP = 1  # touching: at most this many background pixels between the two objects
SEPARATE_GAP = 3  # the renderer keeps unrelated objects at least this far apart
HOLLOW_RATIO = 0.8  # drawn pixels / filled pixels below this reads as hollow
INSIDE_FRACTION = 0.9

_EIGHT = np.ones((3, 3), dtype=bool)


def scale(canvas: int) -> float:
    return canvas / BASE_CANVAS


def extent_for(size: str, canvas: int) -> int:
    return max(4, round(EXTENT[size] * scale(canvas)))


def outline_width(extent: int) -> int:
    """Hollow shapes keep an outline this thick: thin enough to leave a visible hole in small shapes."""
    return 1 if extent < LARGE_MIN_EXTENT else 2


@lru_cache(maxsize=256)
def shape_mask(shape: str, extent: int, hollow: bool = False) -> np.ndarray:
    """A boolean extent x extent mask of a shape (the triangle points up, the cross is a thick plus)."""
    s = extent
    c = (s - 1) / 2
    y, x = np.mgrid[0:s, 0:s]
    if shape == "square":
        mask = np.ones((s, s), dtype=bool)
    elif shape == "circle":
        mask = (x - c) ** 2 + (y - c) ** 2 <= (s / 2) ** 2 - 0.25
    elif shape == "triangle":
        mask = np.abs(x - c) <= (y + 1) / 2
    elif shape == "cross":
        arm = s / 4  # arm width s/2
        mask = (np.abs(x - c) <= arm) | (np.abs(y - c) <= arm)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if hollow:
        inner = ndimage.binary_erosion(mask, structure=_EIGHT, iterations=outline_width(s), border_value=0)
        mask = mask & ~inner
    mask.flags.writeable = False
    return mask


@dataclass
class Blob:
    """One object as seen in pixels: its mask on the canvas and the measurements the predicates use."""

    mask: np.ndarray  # H x W bool, the drawn pixels
    top: int
    left: int
    height: int
    width: int

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Blob:
        rows, cols = np.nonzero(mask)
        top, left = int(rows.min()), int(cols.min())
        return cls(mask, top, left, int(rows.max()) - top + 1, int(cols.max()) - left + 1)

    @cached_property
    def filled(self) -> np.ndarray:
        """The mask with its holes filled (what a hollow shape encloses counts as its own)."""
        return ndimage.binary_fill_holes(self.mask)

    @property
    def extent(self) -> int:
        return max(self.height, self.width)

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) of the bounding-box centre, y growing downwards."""
        return self.left + (self.width - 1) / 2, self.top + (self.height - 1) / 2

    @property
    def fill_ratio(self) -> float:
        return float(self.mask.sum() / max(1, self.filled.sum()))

    def crop(self, mask: np.ndarray) -> np.ndarray:
        """`mask` cut to this blob's square extent box (padded with False at the canvas edge)."""
        s = self.extent
        top = self.top - (s - self.height) // 2
        left = self.left - (s - self.width) // 2
        padded = np.pad(mask, s)
        return padded[top + s : top + 2 * s, left + s : left + 2 * s]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ---- attributes: (verdict, soft score in [0, 1]) --------------------------------------------------------------


def shape_scores(blob: Blob) -> dict[str, float]:
    """IoU of the blob's filled mask with each solid shape template of the same extent."""
    filled = blob.crop(blob.filled)
    scores = {}
    for shape in SHAPES:
        template = shape_mask(shape, blob.extent)
        scores[shape] = float((filled & template).sum() / max(1, (filled | template).sum()))
    return scores


def shape_is(blob: Blob, shape: str) -> tuple[bool, float]:
    scores = shape_scores(blob)
    best = max(scores, key=scores.get)
    return best == shape, scores[shape]


def fill_is(blob: Blob, fill: str) -> tuple[bool, float]:
    hollow_soft = _sigmoid((HOLLOW_RATIO - blob.fill_ratio) / 0.05)
    soft = hollow_soft if fill == "hollow" else 1 - hollow_soft
    return soft > 0.5, soft


def size_is(blob: Blob, size: str, canvas: int) -> tuple[bool, float]:
    large_soft = _sigmoid((blob.extent - LARGE_MIN_EXTENT * scale(canvas)) / 1.0)
    soft = large_soft if size == "large" else 1 - large_soft
    return soft > 0.5, soft


# ---- relations ------------------------------------------------------------------------------------------------


def gap(a: Blob, b: Blob, limit: int = 2 * SEPARATE_GAP) -> int:
    """Background pixels between two objects along the chessboard metric (0: they share an edge or corner).

    Exact up to `limit`; objects whose bounding boxes are further apart than that report the box gap, which
    is then a lower bound (every caller compares with thresholds below `limit`).
    """
    box_gap = max(
        b.left - (a.left + a.width),
        a.left - (b.left + b.width),
        b.top - (a.top + a.height),
        a.top - (b.top + b.height),
    )
    if box_gap > limit:
        return box_gap
    distance = ndimage.distance_transform_cdt(~b.mask, metric="chessboard")
    return int(distance[a.mask].min()) - 1


def _directional(a: Blob, b: Blob, axis: int, sign: int, canvas: int) -> tuple[bool, float]:
    (ax, ay), (bx, by) = a.center, b.center
    along = sign * ((bx - ax) if axis == 0 else (by - ay))
    across = abs((by - ay) if axis == 0 else (bx - ax))
    margin = min(along - SPATIAL_MARGIN * scale(canvas), along - across)
    return margin > 0, _sigmoid(margin / 1.5)


def relation_holds(name: str, a: Blob, b: Blob, canvas: int) -> tuple[bool, float]:
    """Does `a <name> b` hold between two drawn objects? Returns (verdict, soft score)."""
    if name == "to the left of":
        return _directional(a, b, 0, +1, canvas)
    if name == "to the right of":
        return _directional(a, b, 0, -1, canvas)
    if name == "above":
        return _directional(a, b, 1, +1, canvas)
    if name == "below":
        return _directional(a, b, 1, -1, canvas)
    if name == "inside":
        fraction = float(b.filled[a.mask].mean())
        ok = fraction >= INSIDE_FRACTION and a.extent < b.extent
        return ok, fraction if a.extent < b.extent else 0.5 * fraction
    if name in ("bigger than", "smaller than"):
        big, small = (a, b) if name == "bigger than" else (b, a)
        margin = big.extent - small.extent - BIGGER_MARGIN * scale(canvas) + 0.5
        return margin > 0, _sigmoid(margin / 1.0)
    if name == "touching":
        margin = TOUCH_GAP + 0.5 - gap(a, b)
        return margin > 0, _sigmoid(margin / 0.5)
    raise ValueError(f"unknown relation {name!r}")
