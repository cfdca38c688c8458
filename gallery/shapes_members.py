"""Procedural shapes-world members, each with a known, measurable compositional weakness.

They stand in for the kinds of generators in IterComp's gallery whose strengths differ by aspect
(docs/gallery.md has the measured per-aspect table):

- `layout_planner` — a layout-then-render method (the analogue of LMD / InstanceDiffusion): it plans one box per
  object so every *box-expressible* relation (left/right/above/below, bigger/smaller) holds exactly, but
  containment and contact are not relations between boxes, so it keeps those objects apart; and its per-box
  instance renderer is weak at attributes (confuses look-alike shapes, misreads fill words).
- `bag_of_words` — draws exactly the named objects with the right attributes at random places, ignoring every
  relation word (the analogue of a weak text encoder that keeps objects and attributes but loses structure).
- `colour_leak` — lays out the whole scene correctly (every relation holds) but at a fixed rate one object is
  painted in another object's colour (the attribute leakage of CLIP-conditioned models).

Each image depends only on (prompt, seed): the random draws come from generators seeded with both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gallery.base import Generator
from itercomp.errors import PromptError
from itercomp.world.render import Placement, draw, layout
from itercomp.world.scene import Scene, parse
from itercomp.world.vocab import RELATIONS, SPATIAL_RELATIONS

CANVASES = (32, 48, 64)
# Shapes an instance renderer mistakes for each other: similar outlines at a few pixels of extent.
CONFUSABLE = {"circle": "square", "square": "circle", "triangle": "cross", "cross": "triangle"}
BOX_RELATIONS = (*SPATIAL_RELATIONS, "bigger than", "smaller than")
_LAYOUT_STREAM, _WEAKNESS_STREAM = 0, 1


def _rng(prompt: str, seed: int, stream: int) -> np.random.Generator:
    """Independent streams per (prompt, seed): layout draws never shift the weakness draws and vice versa."""
    key = int(hashlib.sha256(prompt.encode()).hexdigest()[:12], 16)
    return np.random.default_rng([int(seed), key, stream])


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"field {name!r} must be a probability in [0, 1], got {value}")


def _canvas(value: int) -> None:
    if value not in CANVASES:
        raise ValueError(f"field 'canvas' must be one of {CANVASES}, got {value}")


def _without_relations(scene: Scene, keep: Sequence[str]) -> tuple[Scene, list[str]]:
    """The scene with only the relations named in `keep`; returns it and the dropped relations' names."""
    kept = tuple(r for r in scene.relations if r.name in keep)
    dropped = [r.name for r in scene.relations if r.name not in keep]
    clauses = tuple(c for c in scene.clauses if c[1] == "and" or c[1] in keep)
    if not clauses:  # `Scene.prompt()` (used in error messages) needs a clause that mentions the objects
        clauses = tuple((i, "and", i + 1) for i in range(0, len(scene.objects) - 1, 2))
    return Scene(scene.objects, kept, clauses), dropped


class _ShapesGenerator(Generator):
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]):
        return [self.draw_one(prompt, int(seed)) for prompt, seed in zip(prompts, seeds)]

    def refusal(self, prompt: str, seed: int) -> str | None:
        # Drawing one small canvas takes about a millisecond: trying it is the exact check (parse, contradictions,
        # and whether this seed's layout fits).
        try:
            self.draw_one(prompt, int(seed))
        except PromptError as e:
            return str(e)
        return None

    def draw_one(self, prompt: str, seed: int) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def _layout(self, scene: Scene, full: Scene, prompt: str, seed: int) -> tuple[list[Placement], str | None]:
        """A layout of `scene`; when its objects do not fit apart, shrink the boxes of unsized objects, and as a
        last resort use the full scene's layout (whose relations may pack objects closer). Returns the
        layout and which fallback was taken."""
        small = Scene(tuple(replace(o, size=o.size or "small") for o in scene.objects), scene.relations, scene.clauses)
        for attempt, candidate in ((None, scene), ("unsized objects drawn small", small), ("full scene", full)):
            try:
                return layout(candidate, _rng(prompt, seed, _LAYOUT_STREAM), self.config.canvas), attempt
            except PromptError:
                continue
        raise PromptError(
            f"gallery member {self.name!r}: cannot lay out {prompt!r} on a {self.config.canvas} px canvas"
        )


@dataclass
class LayoutPlannerConfig:
    canvas: int = 32
    # Relations the planner can express as boxes; the others are dropped and their objects kept apart.
    box_relations: list[str] = field(default_factory=lambda: list(BOX_RELATIONS))
    shape_confusion: float = 0.05  # per object: draws the look-alike shape instead
    fill_misread: float = 0.3  # per stated fill word: draws the other fill
    batch_size: int = 64

    def __post_init__(self):
        _canvas(self.canvas)
        _probability("shape_confusion", self.shape_confusion)
        _probability("fill_misread", self.fill_misread)
        unknown = [r for r in self.box_relations if r not in RELATIONS]
        if unknown:
            raise ValueError(f"field 'box_relations' names {unknown[0]!r}; relations are {', '.join(RELATIONS)}")


class LayoutPlanner(_ShapesGenerator):
    """Plan boxes from the parsed prompt, then render each box with a weak instance renderer."""

    Config = LayoutPlannerConfig
    type_name = "layout_planner"

    def draw_one(self, prompt, seed):
        scene = parse(prompt)
        plan, dropped = _without_relations(scene, self.config.box_relations)
        placements, fallback = self._layout(plan, scene, prompt, seed)
        rng = _rng(prompt, seed, _WEAKNESS_STREAM)
        errors = []
        for i, (obj, placed) in enumerate(zip(scene.objects, placements)):
            # Both draws happen for every object so one object's error never shifts another's.
            confuse, misread = rng.random() < self.config.shape_confusion, rng.random() < self.config.fill_misread
            if confuse:
                placed = replace(placed, shape=CONFUSABLE[placed.shape])
                errors.append(f"{obj.color} {obj.shape}: drawn as {placed.shape}")
            if misread and obj.fill is not None:
                placed = replace(placed, fill="solid" if obj.fill == "hollow" else "hollow")
                errors.append(f"{obj.color} {obj.shape}: fill '{obj.fill}' drawn {placed.fill}")
            placements[i] = placed
        return draw(placements, self.config.canvas), {
            "dropped_relations": dropped,
            "instance_errors": errors,
            "layout_fallback": fallback,
        }


@dataclass
class BagOfWordsConfig:
    canvas: int = 32
    batch_size: int = 64

    def __post_init__(self):
        _canvas(self.canvas)


class BagOfWords(_ShapesGenerator):
    """The named objects with their attributes, placed at random: relation words are ignored."""

    Config = BagOfWordsConfig
    type_name = "bag_of_words"

    def draw_one(self, prompt, seed):
        full = parse(prompt)
        scene, dropped = _without_relations(full, ())
        placements, fallback = self._layout(scene, full, prompt, seed)
        return draw(placements, self.config.canvas), {"ignored_relations": dropped, "layout_fallback": fallback}


@dataclass
class ColourLeakConfig:
    canvas: int = 32
    leak: float = 0.4  # per image: one object takes another object's colour
    batch_size: int = 64

    def __post_init__(self):
        _canvas(self.canvas)
        _probability("leak", self.leak)


class ColourLeak(_ShapesGenerator):
    """A correct layout of the whole scene, but sometimes one object is painted in another's colour."""

    Config = ColourLeakConfig
    type_name = "colour_leak"

    def draw_one(self, prompt, seed):
        scene = parse(prompt)
        placements, _ = self._layout(scene, scene, prompt, seed)
        rng = _rng(prompt, seed, _WEAKNESS_STREAM)
        leaked = None
        if rng.random() < self.config.leak:
            target, source = (int(i) for i in rng.permutation(len(placements))[:2])
            old = placements[target]
            placements[target] = replace(old, color=placements[source].color)
            leaked = f"{old.color} {old.shape} painted {placements[source].color}"
        return draw(placements, self.config.canvas), {"leaked": leaked}


__all__ = ["BagOfWords", "ColourLeak", "LayoutPlanner"]
