"""The renderer: scene + seed -> a random layout that satisfies every relation -> an image.

The world's rules (itercomp.world.rules) are checked first. Layouts are then sampled and checked with the
oracle's own predicates (geometry.py), so a clean render is correct by construction; `inside` and `touching`
are placed constructively because random placement would almost never hit them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from itercomp.errors import PromptError
from itercomp.world.geometry import (
    SEPARATE_GAP,
    TOUCH_GAP,
    Blob,
    extent_for,
    gap,
    relation_holds,
    shape_mask,
)
from itercomp.world.rules import CONTAINER_SHAPE, check_rules  # noqa: F401 (itercomp.world.prompts imports it)
from itercomp.world.scene import ObjectSpec, Scene, parse
from itercomp.world.vocab import FILLS, PALETTE, SIZES

DEFAULT_CANVAS = 32
MAX_TRIES = 2000


class LayoutError(PromptError):
    """A prompt that keeps the world's rules but whose layout the renderer could not fit on the canvas."""


@dataclass(frozen=True)
class Placement:
    """One drawn object: the resolved attributes and where its extent box sits on the canvas."""

    color: str
    shape: str
    fill: str
    size: str
    extent: int
    top: int
    left: int

    def mask(self, canvas: int) -> np.ndarray | None:
        """The object's mask on the canvas, or None if it would stick out of it."""
        if self.top < 0 or self.left < 0 or self.top + self.extent > canvas or self.left + self.extent > canvas:
            return None
        out = np.zeros((canvas, canvas), dtype=bool)
        out[self.top : self.top + self.extent, self.left : self.left + self.extent] = shape_mask(
            self.shape, self.extent, self.fill == "hollow"
        )
        return out


def layout(
    scene: Scene,
    rng: np.random.Generator,
    canvas: int = DEFAULT_CANVAS,
    max_tries: int = MAX_TRIES,
) -> list[Placement]:
    """A random layout satisfying every relation of the scene, with unrelated objects kept apart.

    WorldRuleError when the scene breaks a rule of the world (itercomp.world.rules), LayoutError when no layout
    was found in `max_tries`."""
    required = check_rules(scene)  # scenes built in code reach here without `parse`
    for _ in range(max_tries):
        placements = _try_layout(scene, required, rng, canvas)
        if placements is not None:
            return placements
    raise LayoutError(
        f"cannot draw {scene.prompt()!r} on a {canvas} px canvas: no layout satisfies every relation "
        f"after {max_tries} tries; try fewer large objects or a larger canvas"
    )


def _resolve(obj: ObjectSpec, required: dict[str, str], rng: np.random.Generator) -> tuple[str, str]:
    fill = obj.fill or required.get("fill") or FILLS[rng.integers(2)]
    size = obj.size or required.get("size") or SIZES[rng.integers(2)]
    return fill, size


def _try_layout(scene, required, rng, canvas) -> list[Placement] | None:
    resolved = [_resolve(o, r, rng) for o, r in zip(scene.objects, required)]
    extents = [extent_for(size, canvas) for _, size in resolved]
    anchors = {}  # object index -> (relation, other index) that fixes its position
    for rel in scene.relations:
        if rel.name in ("inside", "touching"):
            anchors.setdefault(rel.subject, (rel.name, rel.object))
    placements: dict[int, Placement] = {}
    order = sorted(range(len(scene.objects)), key=lambda i: i in anchors)  # anchored objects last
    for i in order:
        obj, (fill, size), s = scene.objects[i], resolved[i], extents[i]
        top, left = (int(v) for v in rng.integers(0, canvas - s + 1, size=2))
        if i in anchors:
            name, j = anchors[i]
            if j not in placements:
                return None
            other = placements[j]
            if name == "inside":
                offset = (other.extent - s) // 2
                jitter = max(0, (other.extent - s) // 2 - 3)
                top = other.top + offset + int(rng.integers(-jitter, jitter + 1))
                left = other.left + offset + int(rng.integers(-jitter, jitter + 1))
            else:
                found = _touching_position(other, obj.shape, fill, s, rng, canvas)
                if found is None:
                    return None
                top, left = found
        placements[i] = Placement(obj.color, obj.shape, fill, size, s, top, left)
    masks = [placements[i].mask(canvas) for i in range(len(scene.objects))]
    if any(m is None for m in masks):
        return None
    # Every shape fills its extent box, so the blob is known without scanning the mask.
    blobs = [
        Blob(m, p.top, p.left, p.extent, p.extent) for m, p in zip(masks, (placements[i] for i in range(len(masks))))
    ]
    related = {}
    for rel in sorted(scene.relations, key=lambda r: r.name in ("inside", "touching")):  # cheap checks first
        related[frozenset((rel.subject, rel.object))] = rel.name
        if not relation_holds(rel.name, blobs[rel.subject], blobs[rel.object], canvas)[0]:
            return None
    for i in range(len(blobs)):
        for j in range(i + 1, len(blobs)):
            kind = related.get(frozenset((i, j)))
            distance = gap(blobs[i], blobs[j])
            if kind == "touching":
                if not 0 <= distance <= TOUCH_GAP:
                    return None
            elif kind == "inside":
                if distance < 1:
                    return None
            elif distance < SEPARATE_GAP:
                return None
    return [placements[i] for i in range(len(scene.objects))]


def _touching_position(other: Placement, shape, fill, extent, rng, canvas) -> tuple[int, int] | None:
    """Slide a new object toward `other` along a random direction until it is one step from overlapping."""
    other_blob = Blob.from_mask(other.mask(canvas))
    (cx, cy) = other_blob.center
    angle = rng.uniform(0, 2 * math.pi)
    dx, dy = math.cos(angle), math.sin(angle)
    last_free = None
    for step in np.arange(canvas, 0, -0.5):
        left = round(cx + step * dx - (extent - 1) / 2)
        top = round(cy + step * dy - (extent - 1) / 2)
        mask = Placement("", shape, fill, "", extent, top, left).mask(canvas)
        if mask is None:
            continue
        if gap(Blob.from_mask(mask), other_blob) < 0:
            return last_free
        last_free = (top, left)
    return None


def draw(placements: list[Placement], canvas: int = DEFAULT_CANVAS) -> np.ndarray:
    image = np.zeros((canvas, canvas, 3), dtype=np.uint8)
    for p in placements:
        image[p.mask(canvas)] = PALETTE[p.color]
    return image


def render(prompt: str | Scene, seed: int, canvas: int = DEFAULT_CANVAS) -> np.ndarray:
    """A clean H x W x 3 uint8 image of the prompt; the same seed always gives the same image."""
    scene = parse(prompt) if isinstance(prompt, str) else prompt
    return draw(layout(scene, np.random.default_rng(seed), canvas), canvas)
