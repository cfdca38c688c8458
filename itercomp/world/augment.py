"""Augmentations of the shapes world that keep or break a prompt on purpose, for training reward models.

Label-preserving (an image and its prompt transformed together):

- `mirror(image, prompt)`: flip the image left-right and swap "to the left of" / "to the right of". Every shape
  of the world is symmetric under a left-right flip (the triangle points up), so the oracle's verdict of the pair
  is unchanged.
- `mirror(image, prompt, axis="vertical")`: flip top-bottom and swap "above" / "below". Exact only when the
  prompt names no triangle (a flipped triangle points down and is no longer the world's triangle), so such
  prompts raise `PromptError`.

Hard negatives (the image changed, the prompt kept):

- `swap_colors(image, a, b)`: the pixels nearest to palette colour `a` take colour `b` and vice versa, keeping
  each pixel's offset from its palette colour (the sample's blur and noise). Two named objects with their
  colours exchanged: the same layout and drawing, the binding (and a relation's direction) broken.
- `colour_swap_negatives(image, prompt)`: that swap for every pair of colours the prompt names.

One-edit prompts (itercomp.world.edits): `contrastive_prompts(prompt)` gives the prompt's contradicting
one-attribute variants, against which a reward can be normalised (a score relative to how well the image fits
prompts that differ in one detail).
"""

from __future__ import annotations

import numpy as np

from itercomp.errors import PromptError
from itercomp.world.edits import edits
from itercomp.world.scene import Scene, parse
from itercomp.world.vocab import COLORS, PALETTE

_PALETTE = np.array([(0, 0, 0), *PALETTE.values()], dtype=np.float32)  # index 0: the background
_SWAP = {
    "horizontal": {"to the left of": "to the right of", "to the right of": "to the left of"},
    "vertical": {"above": "below", "below": "above"},
}


def _uint8_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got shape {array.shape} and dtype {array.dtype}")
    return array


def swap_relations(scene: Scene, axis: str = "horizontal") -> Scene:
    """The scene with every relation along `axis` turned around (left <-> right, or above <-> below)."""
    if axis not in _SWAP:
        raise ValueError(f"axis={axis!r}; use 'horizontal' (left/right) or 'vertical' (above/below)")
    for k, rel in enumerate(scene.relations):
        if rel.name in _SWAP[axis]:
            scene = scene.with_relation(k, _SWAP[axis][rel.name])
    return scene


def mirror(image, prompt: str | Scene, axis: str = "horizontal") -> tuple[np.ndarray, str]:
    """(flipped image, prompt with the relations along `axis` swapped): the same verdict under the oracle."""
    image = _uint8_image(image)
    scene = parse(prompt) if isinstance(prompt, str) else prompt
    if axis == "vertical" and any(o.shape == "triangle" for o in scene.objects):
        raise PromptError(
            f"{scene.prompt()!r} names a triangle: a top-bottom flip points it down, so the vertical mirror is not "
            "exact; use axis='horizontal'"
        )
    swapped = swap_relations(scene, axis)
    flipped = image[:, ::-1] if axis == "horizontal" else image[::-1]
    return np.ascontiguousarray(flipped), swapped.prompt()


def palette_labels(image) -> np.ndarray:
    """H x W: 0 for the background, 1 + palette index for the nearest palette colour (as the oracle segments)."""
    pixels = _uint8_image(image).astype(np.float32)
    return ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1).argmin(-1)


def swap_colors(image, a: str, b: str) -> np.ndarray:
    """The image with palette colours `a` and `b` exchanged, each pixel keeping its offset from its colour."""
    for name in (a, b):
        if name not in PALETTE:
            raise ValueError(f"unknown colour {name!r}; the palette is {', '.join(COLORS)}")
    if a == b:
        raise ValueError(f"swap_colors needs two different colours, got {a!r} twice")
    return recolor(image, {a: b, b: a})


def colour_swap_negatives(image, prompt: str | Scene) -> list[tuple[str, np.ndarray]]:
    """(kind, image) for every pair of colours the prompt names, exchanged in the image; the prompt is kept."""
    scene = parse(prompt) if isinstance(prompt, str) else prompt
    colours = [o.color for o in scene.objects]
    return [(f"swap-{a}-{b}", swap_colors(image, a, b)) for i, a in enumerate(colours) for b in colours[i + 1 :]]


def contrastive_prompts(prompt: str | Scene, limit: int | None = None, seed: int = 0) -> list[str]:
    """The prompt's contradicting one-attribute variants (itercomp.world.edits), distinct, in a fixed order."""
    scene = parse(prompt) if isinstance(prompt, str) else prompt
    own = scene.prompt()
    out: list[str] = []
    for _, edited in edits(scene, np.random.default_rng(seed)):
        text = edited.prompt()
        if text != own and text not in out:
            out.append(text)
    return out[:limit] if limit is not None else out


# ---- symmetry views (test-time augmentation) ------------------------------------------------------------------


def recolor(image, mapping: dict[str, str]) -> np.ndarray:
    """The image with palette colours renamed by `mapping` (a permutation of some colours), offsets kept."""
    image = _uint8_image(image)
    if sorted(mapping) != sorted(mapping.values()) or any(c not in PALETTE for c in mapping):
        raise ValueError(f"mapping must permute palette colours, got {mapping}")
    labels = palette_labels(image)
    out = image.astype(np.float32)
    for a, b in mapping.items():
        out[labels == 1 + COLORS.index(a)] += _PALETTE[1 + COLORS.index(b)] - _PALETTE[1 + COLORS.index(a)]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def recolor_scene(scene: Scene, mapping: dict[str, str]) -> Scene:
    for i, obj in enumerate(scene.objects):
        scene = scene.with_object(i, color=mapping.get(obj.color, obj.color))
    return scene


def view_specs(count: int, seed: int = 0) -> list[tuple[bool, bool, tuple[int, ...] | None]]:
    """`count` symmetries of the world as (flip left-right, flip top-bottom, colour permutation or None): the
    identity first, then the three flips, then flips combined with random permutations of the palette."""
    if count < 1:
        raise ValueError(f"view count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    specs = []
    for v in range(count):
        permutation = tuple(int(i) for i in rng.permutation(len(COLORS))) if v >= 4 else None
        specs.append((v % 2 == 1, (v // 2) % 2 == 1, permutation))
    return specs


def apply_view(images, prompts: list[str], spec) -> tuple:
    """One symmetry applied to a batch: images B x 3 x H x W in [0, 1] (torch; differentiable, each pixel moved
    or shifted by a constant), prompts rewritten to match. A top-bottom flip is skipped for a prompt that names a
    triangle (it would not be exact)."""
    import torch

    horizontal, vertical, permutation = spec
    scenes = [parse(p) for p in prompts]
    out, texts = [], []
    palette = torch.as_tensor(_PALETTE / 255.0, dtype=images.dtype, device=images.device)  # (1 + C) x 3
    if permutation is not None:
        target = torch.cat([palette[:1], palette[1:][list(permutation)]])  # background stays black
        shift = target - palette
    for image, scene in zip(images, scenes):
        if horizontal:
            image, scene = image.flip(-1), swap_relations(scene, "horizontal")
        if vertical and not any(o.shape == "triangle" for o in scene.objects):
            image, scene = image.flip(-2), swap_relations(scene, "vertical")
        if permutation is not None:
            with torch.no_grad():
                labels = ((image.permute(1, 2, 0)[:, :, None, :] - palette) ** 2).sum(-1).argmin(-1)
            image = (image + shift[labels].permute(2, 0, 1)).clamp(0, 1)
            scene = recolor_scene(scene, {c: COLORS[permutation[i]] for i, c in enumerate(COLORS)})
        out.append(image)
        texts.append(scene.prompt())
    return torch.stack(out), texts


def symmetry_views(images, prompts: list[str], count: int = 12, seed: int = 0) -> list[tuple]:
    """[(images, prompts)] under `count` symmetries of the shapes world (view_specs), the identity first."""
    return [apply_view(images, prompts, spec) if k else (images, list(prompts))
            for k, spec in enumerate(view_specs(count, seed))]  # fmt: skip
