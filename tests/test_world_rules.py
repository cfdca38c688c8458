"""The world's rules live in one place (itercomp.world.rules) and are checked at parse: whatever the renderer
refuses for a rule, `parse` refuses too, and every generated prompt keeps parsing."""

from collections import Counter

import numpy as np
import pytest

from itercomp.errors import PromptError
from itercomp.world import ASPECTS, SPLITS, generate_prompts, parse, render
from itercomp.world.prompts import sample_scene
from itercomp.world.render import LayoutError, layout
from itercomp.world.rules import WorldRuleError
from itercomp.world.scene import Relation, Scene
from itercomp.world.vocab import COLORS, FILLS, RELATIONS, SHAPES, SIZES

N_PROMPTS = 5000
# A phrase of each rule's message (itercomp.world.rules).
RULE_PHRASES = ("own color", "room inside", "must be", "inside both", "one direction")
# `render` is draw(layout(...)) and refuses only in `layout`, which checks the rules before its first try; a few
# tries are enough to tell a rule refusal from a layout that did not fit (LayoutError), and keep the test fast.
LAYOUT_TRIES = 3


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _rewire(scene: Scene, k: int, subject: int, object: int) -> Scene:
    """The scene with relation k between other objects (reversed, or relating a pair another clause relates)."""
    relations = list(scene.relations)
    relations[k] = Relation(subject, relations[k].name, object)
    clauses = list(scene.clauses)
    position = [c for c, clause in enumerate(clauses) if clause[1] != "and"][k]
    clauses[position] = (subject, relations[k].name, object)
    # An object no clause mentions any more leaves the scene (the prompt text no longer names it).
    kept = sorted({i for s, _, o in clauses for i in (s, o)})
    new = {old: index for index, old in enumerate(kept)}
    return Scene(
        tuple(scene.objects[i] for i in kept),
        tuple(Relation(new[r.subject], r.name, new[r.object]) for r in relations),
        tuple((new[s], name, new[o]) for s, name, o in clauses),
    )


def _edit(scene: Scene, rng) -> tuple[str, Scene]:
    """One random edit, valid or not: a shape, size, fill or colour changed (colours may repeat), an attribute
    swapped between two objects, a relation renamed, moved to another pair of objects or put in place of "and"."""
    i, j = (int(x) for x in rng.choice(len(scene.objects), 2, replace=False))
    kind = _pick(rng, ("shape", "size", "fill", "color", "swap", "relation", "rewire"))
    if kind == "shape":
        return kind, scene.with_object(i, shape=_pick(rng, SHAPES))
    if kind == "size":
        return kind, scene.with_object(i, size=_pick(rng, (None, *SIZES)))
    if kind == "fill":
        return kind, scene.with_object(i, fill=_pick(rng, (None, *FILLS)))
    if kind == "color":
        return kind, scene.with_object(i, color=_pick(rng, COLORS))
    if kind == "swap":
        key = _pick(rng, ("color", "shape", "size", "fill"))
        a, b = scene.objects[i], scene.objects[j]
        return f"swap_{key}", scene.with_object(i, **{key: getattr(b, key)}).with_object(j, **{key: getattr(a, key)})
    name = _pick(rng, RELATIONS)
    if not scene.relations:  # "<a> and <b>" becomes "<a> <relation> <b>"
        return "relation", Scene(scene.objects, (Relation(0, name, 1),), ((0, name, 1),))
    k = int(rng.integers(len(scene.relations)))
    return kind, scene.with_relation(k, name) if kind == "relation" else _rewire(scene, k, i, j)


def _render_refusal(scene: Scene, seed: int) -> str | None:
    """Why the renderer refuses the scene ("rule" or "layout"), or None when it draws it."""
    try:
        layout(scene, np.random.default_rng(seed), max_tries=LAYOUT_TRIES)
    except LayoutError:
        return "layout"
    except PromptError:  # any other refusal of the renderer is one for a rule
        return "rule"
    return None


def test_parse_refuses_every_prompt_render_refuses_for_a_rule():
    rng = np.random.default_rng(0)
    counts: Counter = Counter()
    for n in range(N_PROMPTS):
        scene, kinds = sample_scene(ASPECTS[n % len(ASPECTS)], rng), []
        for _ in range(int(rng.integers(3))):  # 0, 1 or 2 edits
            kind, scene = _edit(scene, rng)
            kinds.append(kind)
        text = scene.prompt()
        refusal = _render_refusal(scene, n)
        try:
            parsed = parse(text)
        except WorldRuleError as e:
            parsed = None
            counts.update(phrase for phrase in RULE_PHRASES if phrase in str(e))
        assert (refusal == "rule") == (parsed is None), (text, kinds, refusal)
        if parsed is not None:
            assert parsed.prompt() == text  # what parse accepted is the scene the renderer saw
        counts[refusal] += 1
    # The edits reach every rule, and both sides of the rules.
    assert counts["rule"] > 500 and counts[None] > 1500 and all(counts[p] for p in RULE_PHRASES), counts


def test_render_refuses_rule_breaking_scenes_before_any_layout():
    # a scene built in code, never parsed
    scene = parse("a small blue square inside a large hollow cyan square").with_object(1, shape="circle")
    with pytest.raises(WorldRuleError, match="only a hollow square has room inside"):
        render(scene, 0)


@pytest.mark.parametrize(
    "prompt,rule",
    [
        ("a small blue square inside a large hollow cyan circle", "only a hollow square has room inside"),
        ("a large red circle inside a blue square", "must be small"),
        ("a red circle inside a solid blue square", "must be hollow"),
        ("a red circle and a red square", "every object needs its own color"),
        ("a red circle bigger than a blue square and the red circle smaller than a green cross", "must be"),
        ("a red circle inside a blue square and the red circle inside a green square", "inside one of them"),
        ("a red circle above a blue square and the red circle to the left of the blue square", "one direction"),
        ("a red circle to the left of a blue square and the blue square to the left of the red circle", "direction"),
    ],
)
def test_parse_names_the_rule_and_the_fix(prompt, rule):
    with pytest.raises(WorldRuleError, match=rule):
        parse(prompt)


def test_consistent_repetitions_of_a_direction_are_kept():
    prompt = "a red circle to the left of a blue square and the blue square to the right of the red circle"
    assert parse(prompt).prompt() == prompt


@pytest.mark.parametrize("aspect", ASPECTS)
def test_every_generated_prompt_parses(aspect):
    for split in SPLITS:
        for text in generate_prompts(aspect, split, 12, seed=3):
            assert parse(text).prompt() == text
