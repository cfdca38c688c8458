import numpy as np
import pytest

from itercomp.errors import PromptError
from itercomp.world import ASPECTS, generate_prompts, parse, render, score, split_of
from itercomp.world.edits import edits
from itercomp.world.geometry import shape_mask
from itercomp.world.render import layout

DESIGN_EXAMPLES = [
    ("a red circle and a hollow blue square", "attribute_binding"),
    ("a small green triangle to the left of a white cross", "spatial_relationship"),
    ("a yellow circle inside a large hollow purple square", "non_spatial_relationship"),
    ("a red square touching a blue circle and a green cross above the blue circle", "complex"),
]
RELATIONS_TEXT = [
    "a red circle to the left of a blue square",
    "a red circle to the right of a blue square",
    "a red circle above a blue square",
    "a red circle below a blue square",
    "a red circle inside a blue square",
    "a red circle bigger than a blue square",
    "a red circle smaller than a blue square",
    "a red circle touching a blue square",
]


@pytest.mark.parametrize("prompt,aspect", DESIGN_EXAMPLES)
def test_design_examples_parse_render_and_score_correct(prompt, aspect):
    scene = parse(prompt)
    assert scene.aspect == aspect
    assert scene.prompt() == prompt  # canonical text round-trips
    for seed in range(5):
        verdict = score(render(prompt, seed), prompt)
        assert verdict.correct, [p for p in verdict.predicates if not p.ok]
        assert 0.9 <= verdict.score <= 1.0


@pytest.mark.parametrize("prompt", RELATIONS_TEXT)
def test_every_relation_renders_correct(prompt):
    for seed in range(5):
        assert score(render(prompt, seed), prompt).correct


def test_complex_reference_reuses_the_object():
    scene = parse("a red square touching a blue circle and a green cross above the blue circle")
    assert len(scene.objects) == 3
    assert scene.relations[1].object == 1


@pytest.mark.parametrize(
    "bad,words",
    [
        ("a red circel and a blue square", "circel"),
        ("a red circle next to a blue square", "next to"),
        ("a red circle and a red square", "color red"),
        ("a red circle", "end of prompt"),
        ("a pink circle and a blue square", "pink"),
    ],
)
def test_parse_error_names_offending_words_and_vocabulary(bad, words):
    with pytest.raises(PromptError) as error:
        parse(bad)
    assert words in str(error.value)


def test_unsatisfiable_prompts_say_why():
    with pytest.raises(PromptError, match="must be small"):
        render("a large red circle inside a blue square", 0)
    with pytest.raises(PromptError, match="square"):
        render("a red circle inside a hollow blue triangle", 0)


def test_render_is_deterministic_and_seed_dependent():
    p = "a red circle to the left of a blue square"
    assert np.array_equal(render(p, 3), render(p, 3))
    assert not all(np.array_equal(render(p, 3), render(p, s)) for s in range(4, 8))


def test_palette_and_background_exact():
    image = render("a red circle and a blue square", 0)
    colors = {tuple(c) for c in image.reshape(-1, 3)}
    assert colors == {(0, 0, 0), (230, 40, 40), (50, 90, 235)}


def test_hollow_shapes_keep_a_hole():
    for shape in ("circle", "square", "triangle", "cross"):
        for extent in (8, 14):
            assert shape_mask(shape, extent, True).sum() < shape_mask(shape, extent).sum()


@pytest.mark.parametrize("aspect", ASPECTS)
def test_generated_prompts_are_in_their_split_and_render_correct(aspect):
    prompts = generate_prompts(aspect, "val", 15)
    assert len(set(prompts)) == 15
    assert generate_prompts(aspect, "val", 15) == prompts  # deterministic
    for k, p in enumerate(prompts):
        assert split_of(p) == "val"
        assert parse(p).aspect == aspect
        assert score(render(p, k), p).correct


def test_splits_disjoint():
    sets = {s: set(generate_prompts("attribute_binding", s, 40)) for s in ("train", "val", "test")}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])


def test_oracle_robust_to_mild_noise():
    rng = np.random.default_rng(0)
    for k, p in enumerate(generate_prompts("spatial_relationship", "train", 20)):
        image = render(p, k).astype(np.float32) / 255 + rng.normal(0, 0.03, (32, 32, 3))
        assert score(np.clip(image, 0, 1), p).correct


@pytest.mark.parametrize("aspect", ASPECTS)
def test_oracle_rejects_one_edit_negatives(aspect):
    rng = np.random.default_rng(1)
    kinds = set()
    for p in generate_prompts(aspect, "train", 12):
        scene = parse(p)
        for kind, edited in edits(scene, rng):
            try:
                bad = render(edited, 0)
            except PromptError:
                continue
            kinds.add(kind)
            assert not score(bad, scene).correct, (p, kind, edited.prompt())
    assert {"change_shape", "change_color"} <= kinds


def test_soft_score_orders_partial_matches():
    prompt = "a red circle to the left of a blue square"
    good = score(render(prompt, 0), prompt).score
    wrong_relation = score(render("a red circle to the right of a blue square", 0), prompt).score
    empty = score(np.zeros((32, 32, 3), np.uint8), prompt).score
    assert good > wrong_relation > empty == 0.0


def test_larger_canvas():
    p = "a small green triangle to the left of a white cross"
    assert score(render(p, 0, canvas=64), p).correct


def test_layout_objects_stay_on_canvas():
    scene = parse("a large red square above a large blue circle")
    for seed in range(10):
        for placement in layout(scene, np.random.default_rng(seed)):
            assert placement.mask(32) is not None


def test_predicate_failures_name_what_fails_and_what_alone_fails():
    from itercomp.world.evaluate import predicate_failures, predicate_kind

    prompt = "a red circle to the left of a blue square"
    assert predicate_kind("red circle: shape circle") == "shape circle"
    assert predicate_kind("red circle to the left of blue square") == "to the left of"
    right = render(prompt, seed=0)
    swapped = render("a red circle to the right of a blue square", seed=0)
    no_square = render("a red circle to the left of a green square", seed=0)  # no blue square
    images = [{"predicates": score(im, prompt).to_dict()["predicates"]} for im in (right, swapped, no_square)]
    table = predicate_failures(images)
    assert table["to the left of"] == {"checked": 3, "failed": 2, "sole_failure": 1}  # alone wrong in `swapped`
    assert table["present"] == {"checked": 6, "failed": 1, "sole_failure": 0}
    assert list(table)[0] == "to the left of"  # most failures first


def test_object_failures_name_what_each_object_misses():
    from itercomp.world.evaluate import object_failures, object_misses, objects_drawn

    image = render("a red square and a small hollow blue square", seed=0)
    wrong_shape = score(image, "a red circle and a small hollow blue square")
    assert object_failures(wrong_shape) == [("shape",), ()] and objects_drawn(wrong_shape) == [False, True]
    wrong_fill_and_size = score(image, "a red square and a large solid blue square")
    assert object_failures(wrong_fill_and_size) == [(), ("fill", "size")]
    assert object_misses(wrong_fill_and_size) == {"fill": 1, "size": 1}
    blank = score(image * 0, "a red square and a large solid blue square")
    assert object_misses(blank) == {"present": 2}  # a missing object fails on presence alone
