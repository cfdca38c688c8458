"""Prompt generators per aspect and the fixed train/val/test splits.

A prompt's split is a stable hash of its canonical text, so splits are disjoint and the same on every
machine, whatever generated the prompt.
"""

from __future__ import annotations

import hashlib

import numpy as np

from itercomp.errors import ItercompError, PromptError
from itercomp.world.render import CONTAINER_SHAPE, layout
from itercomp.world.scene import ObjectSpec, Relation, Scene, canonical
from itercomp.world.vocab import (
    ASPECTS,
    COLORS,
    FILLS,
    NON_SPATIAL_RELATIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SPATIAL_RELATIONS,
    SPLITS,
)

# Out of 20 hash buckets: 16 train, 2 val, 2 test.
_SPLIT_BUCKETS = {"train": range(0, 16), "val": range(16, 18), "test": range(18, 20)}
WORD_PROBABILITY = 0.35  # how often an optional size or fill word is spelled out


def split_of(prompt: str) -> str:
    """The split of a shapes-world prompt, fixed by its canonical text (so paraphrases share it)."""
    return bucket_split(canonical(prompt))


def bucket_split(key: str) -> str:
    """The split of a text key: a hash of it picks one of 20 buckets (the table above). Any prompt's split goes
    through here, the world's (`split_of`) and any other text's (`itercomp.prompts.split_for`)."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 20
    return next(name for name, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _object(
    rng,
    color: str,
    shape: str | None = None,
    size: str | None = None,
    fill: str | None = None,
):
    """An object with optional words drawn at random unless a relation fixes them."""
    size = size if size is not None else (_pick(rng, SIZES) if rng.random() < WORD_PROBABILITY else None)
    fill = fill if fill is not None else (_pick(rng, FILLS) if rng.random() < WORD_PROBABILITY else None)
    return ObjectSpec(color, shape or _pick(rng, SHAPES), fill, size)


def _word(rng, value: str) -> str | None:
    """A word the relation implies: spelled out sometimes, left for the reader other times."""
    return value if rng.random() < WORD_PROBABILITY else ""


def _relation_pair(rng, name: str, colors) -> tuple[ObjectSpec, ObjectSpec]:
    """Two objects that the relation `name` can hold between (sizes and fills consistent with it)."""
    if name == "inside":
        a = _object(rng, colors[0], size=_word(rng, "small"))
        b = _object(
            rng,
            colors[1],
            CONTAINER_SHAPE,
            size=_word(rng, "large"),
            fill=_word(rng, "hollow"),
        )
    elif name in ("bigger than", "smaller than"):
        big, small = ("large", "small") if name == "bigger than" else ("small", "large")
        a = _object(rng, colors[0], size=_word(rng, big))
        b = _object(rng, colors[1], size=_word(rng, small))
    else:
        a, b = _object(rng, colors[0]), _object(rng, colors[1])
    return _clean(a), _clean(b)


def _clean(obj: ObjectSpec) -> ObjectSpec:
    return ObjectSpec(obj.color, obj.shape, obj.fill or None, obj.size or None)


def sample_scene(aspect: str, rng: np.random.Generator) -> Scene:
    colors = [COLORS[i] for i in rng.permutation(len(COLORS))[:3]]
    if aspect == "attribute_binding":
        a, b = _object(rng, colors[0]), _object(rng, colors[1])
        return Scene((a, b), (), ((0, "and", 1),))
    if aspect in ("spatial_relationship", "non_spatial_relationship"):
        name = _pick(
            rng,
            SPATIAL_RELATIONS if aspect == "spatial_relationship" else NON_SPATIAL_RELATIONS,
        )
        a, b = _relation_pair(rng, name, colors)
        return Scene((a, b), (Relation(0, name, 1),), ((0, name, 1),))
    if aspect == "complex":
        first, second = _pick(rng, RELATIONS), _pick(rng, RELATIONS)
        a, b = _relation_pair(rng, first, colors)
        # The second clause relates a new object to one of the first two, as subject or as object.
        shared = int(rng.integers(2))
        new = _object(rng, colors[2])
        objects = (a, b, new)
        clause = (2, second, shared) if rng.random() < 0.5 else (shared, second, 2)
        relations = (Relation(0, first, 1), Relation(*clause))
        return Scene(objects, relations, ((0, first, 1), clause))
    raise ItercompError(f"unknown aspect {aspect!r}; expected one of {', '.join(ASPECTS)}")


def is_drawable(scene: Scene, seeds: int = 3, tries: int = 400) -> bool:
    """Only prompts that lay out easily for several seeds are offered, so every later render succeeds."""
    try:
        for seed in range(seeds):
            layout(scene, np.random.default_rng(seed), max_tries=tries)
    except PromptError:
        return False
    return True


def generate_prompts(aspect: str, split: str, n: int, seed: int = 0) -> list[str]:
    """`n` distinct canonical prompts of one aspect from one split; the same arguments give the same list."""
    if split not in SPLITS:
        raise ItercompError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if n < 0:
        raise ItercompError(f"-n must be >= 0, got {n}")
    rng = np.random.default_rng([seed, ASPECTS.index(aspect) if aspect in ASPECTS else 99])
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(200 * n + 1000):
        if len(out) == n:
            return out
        scene = sample_scene(aspect, rng)
        text = scene.prompt()
        if text in seen or split_of(text) != split or not is_drawable(scene):
            continue
        seen.add(text)
        out.append(text)
    raise ItercompError(f"could only find {len(out)} distinct {aspect} prompts in split {split}; ask for fewer")
