"""One-attribute edits that contradict a prompt: the hard negatives of composition.

Each edit changes exactly one thing (two objects' colours swapped, a colour, shape, fill or size changed, a
relation flipped) and is kept only when no image can satisfy both the old and the new prompt.
"""

from __future__ import annotations

import numpy as np

from itercomp.world.scene import Scene
from itercomp.world.vocab import COLORS, OPPOSITE, SHAPES

EDIT_KINDS = ("swap_colors", "change_color", "change_shape", "change_fill", "change_size", "flip_relation")
# Relations without an opposite are replaced by one that the renderer keeps apart (never inside or touching).
_REPLACEMENT = {"inside": "to the left of", "touching": "above"}
_SYMMETRIC = {"touching"}


def _conflict(a, b) -> bool:
    """True when two object descriptions cannot describe the same drawn object."""
    return any(
        getattr(a, k) is not None and getattr(b, k) is not None and getattr(a, k) != getattr(b, k)
        for k in ("shape", "fill", "size")
    )


def edits(scene: Scene, rng: np.random.Generator) -> list[tuple[str, Scene]]:
    """All contradicting one-attribute edits of a scene, in random order (drawability is the caller's check)."""
    out: list[tuple[str, Scene]] = []
    objs = scene.objects
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            related = [r for r in scene.relations if {r.subject, r.object} == {i, j}]
            asymmetric = any(r.name not in _SYMMETRIC for r in related)
            if _conflict(objs[i], objs[j]) or asymmetric:
                swapped = scene.with_object(i, color=objs[j].color).with_object(j, color=objs[i].color)
                out.append(("swap_colors", swapped))
    for i, obj in enumerate(objs):
        unused = [c for c in COLORS if c not in {o.color for o in objs}]
        out.append(("change_color", scene.with_object(i, color=unused[int(rng.integers(len(unused)))])))
        other_shapes = [s for s in SHAPES if s != obj.shape]
        out.append(("change_shape", scene.with_object(i, shape=other_shapes[int(rng.integers(3))])))
        if obj.fill is not None:
            out.append(("change_fill", scene.with_object(i, fill="solid" if obj.fill == "hollow" else "hollow")))
        if obj.size is not None:
            out.append(("change_size", scene.with_object(i, size="small" if obj.size == "large" else "large")))
    for k, rel in enumerate(scene.relations):
        new = OPPOSITE.get(rel.name) or _REPLACEMENT[rel.name]
        out.append(("flip_relation", scene.with_relation(k, new)))
    order = rng.permutation(len(out))
    return [out[i] for i in order]
