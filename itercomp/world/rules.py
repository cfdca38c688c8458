"""The rules of the shapes world, in one place: what a prompt may say so that some image can satisfy it.

`parse` checks them, so a prompt that breaks one is refused where it is read (a gallery's prompt file, an
import, `world score`); `render` checks them again for scenes built in code. Whether the layout of a prompt that
keeps every rule fits a given canvas is not a rule: the renderer finds that out by trying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from itercomp.errors import PromptError
from itercomp.world.vocab import OPPOSITE, SPATIAL_RELATIONS

if TYPE_CHECKING:
    from itercomp.world.scene import ObjectSpec, Scene

# The only shape whose hollow interior holds a small object with a pixel to spare on a 32 px canvas.
CONTAINER_SHAPE = "square"
# Which size each side of a relation must have, as (subject size, object size).
SIZE_RULES = {
    "inside": ("small", "large"),
    "bigger than": ("large", "small"),
    "smaller than": ("small", "large"),
}
# A spatial relation read from its object's side ("a left of b" is "b right of a").
_CONVERSE = {name: OPPOSITE[name] for name in SPATIAL_RELATIONS}


class WorldRuleError(PromptError):
    """A prompt in the world's words that no image can satisfy; the message names the rule and the fix."""


def check_rules(scene: Scene) -> list[dict[str, str]]:
    """The sizes and fills the relations force on each object (what a prompt leaves open is drawn at random);
    WorldRuleError naming the rule and the fix when the scene breaks one."""
    check_colors(scene.objects, scene.prompt())
    required: list[dict[str, str]] = [{} for _ in scene.objects]

    def require(index: int, key: str, value: str, why: str) -> None:
        obj = scene.objects[index]
        stated = getattr(obj, key) or required[index].get(key)
        if stated not in (None, value):
            raise WorldRuleError(
                f"cannot draw {scene.prompt()!r}: the {obj.color} {obj.shape} must be {value} because {why}, "
                f"but it is {stated}; change the {key} word or the relation"
            )
        required[index][key] = value

    for rel in scene.relations:
        a, b = scene.objects[rel.subject], scene.objects[rel.object]
        if rel.subject == rel.object:
            raise WorldRuleError(
                f"cannot draw {scene.prompt()!r}: the {a.color} {a.shape} cannot be {rel.name} itself; "
                "relate two different objects"
            )
        why = f"'{a.color} {a.shape} {rel.name} {b.color} {b.shape}'"
        if rel.name in SIZE_RULES:
            size_a, size_b = SIZE_RULES[rel.name]
            require(rel.subject, "size", size_a, why)
            require(rel.object, "size", size_b, why)
        if rel.name == "inside":
            require(rel.object, "fill", "hollow", why)
            if b.shape != CONTAINER_SHAPE:
                raise WorldRuleError(
                    f"cannot draw {scene.prompt()!r}: only a hollow {CONTAINER_SHAPE} has room inside for another "
                    f"object, not a {b.shape}; make the container a {CONTAINER_SHAPE}"
                )
    _check_containers(scene)
    _check_directions(scene)
    return required


def check_colors(objects: Sequence[ObjectSpec], prompt: str) -> None:
    """Every object has its own colour: that is how "the <color> <shape>" refers back and how the oracle finds
    an object among the pixels."""
    colors = [o.color for o in objects]
    duplicated = sorted({c for c in colors if colors.count(c) > 1})
    if duplicated:
        raise WorldRuleError(
            f"{prompt!r} names two objects of color {duplicated[0]}; every object needs its own color "
            f"(refer back to an object with 'the {duplicated[0]} <shape>')"
        )


def _check_containers(scene: Scene) -> None:
    """An object sits inside one container at most: two containers would have to overlap, and objects that no
    relation ties are drawn apart."""
    containers: dict[int, int] = {}
    for rel in scene.relations:
        if rel.name != "inside":
            continue
        first = containers.setdefault(rel.subject, rel.object)
        if first != rel.object:
            a, b, c = (scene.objects[i] for i in (rel.subject, first, rel.object))
            raise WorldRuleError(
                f"cannot draw {scene.prompt()!r}: the {a.color} {a.shape} cannot be inside both the {b.color} "
                f"{b.shape} and the {c.color} {c.shape}; put it inside one of them"
            )


def _check_directions(scene: Scene) -> None:
    """Two objects have one direction between them: a spatial relation holds along the dominant axis of their
    centres, so "left of" and "above" (or "left of" and "right of") cannot both hold between the same pair."""
    directions: dict[tuple[int, int], str] = {}
    for rel in scene.relations:
        if rel.name not in SPATIAL_RELATIONS:
            continue
        pair, name = (rel.subject, rel.object), rel.name
        if rel.subject > rel.object:  # read every pair from its first object's side
            pair, name = (rel.object, rel.subject), _CONVERSE[rel.name]
        first = directions.setdefault(pair, name)
        if first != name:
            a, b = (scene.objects[i] for i in pair)
            raise WorldRuleError(
                f"cannot draw {scene.prompt()!r}: the {a.color} {a.shape} cannot be both {first} and {name} the "
                f"{b.color} {b.shape}; keep one direction between two objects"
            )
