"""Evaluators (docs/evaluation.md): T2I-CompBench's rules with worked numbers, the registry and its errors, the
shapes / t2i_compbench / rewards evaluators, `itercomp eval` on folders and on a run's round, and the exporter."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from itercomp.cli import main
from itercomp.errors import ItercompError
from itercomp.evaluation import available_evaluators, build_evaluator, register_evaluator, summarize_rows
from itercomp.evaluation import compbench as cb
from itercomp.world import generate_prompts, prompt_id, render

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED_REWARDS = Path(__file__).resolve().parents[1] / "itercomp" / "weights" / "rewards"


# ---- noun phrases (BLIP_vqa.py's questions) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt,phrases",
    [
        ("a red book and a brown sheep", ["a red book", "a brown sheep"]),
        ("rubber sole shoes and a fluffy teddy bear", ["rubber sole shoes", "a fluffy teddy bear"]),
        # the relation's "top" is not asked about, nor the verb after the subject
        ("The red hat was on top of the brown coat rack.", ["The red hat", "the brown coat rack"]),
        ("The fluffy white clouds floated above the jagged mountain peaks.",
         ["The fluffy white clouds", "the jagged mountain peaks"]),
        # verbs after an auxiliary or "and" are not phrases; a determiner starts one ("holding a book")
        ("A man is holding a book and reading on a park bench.", ["A man", "a book", "a park bench"]),
        ("A writer is brainstorming ideas for their next novel, scribbling notes in a notebook.",
         ["A writer", "ideas", "their next novel", "notes", "a notebook"]),
        ("a small green triangle to the left of a white cross", ["a small green triangle", "a white cross"]),
        ("a bee on side of a couch", ["a bee", "a couch"]),
    ],
)  # fmt: skip
def test_noun_phrases(prompt, phrases):
    assert cb.noun_phrases(prompt) == phrases


def test_noun_phrase_heads_and_modifiers():
    assert [c.head for c in cb.noun_chunks("the brown coat rack next to a cell phone")] == ["rack", "phone"]
    assert cb.strip_modifiers("The sweet red strawberry lay next to the tart green apple.") == (
        "The strawberry lay next to the apple."
    )


# ---- BLIP-VQA: P(yes) and the product ---------------------------------------------------------------------------


def test_yes_probability_is_blip_vqa_prob():
    import torch

    logits = torch.tensor([[0.0, 1.0, 3.0, -2.0], [5.0, 2.0, 2.0, 0.0]])
    # vqa_prob: softmax over the vocabulary, then P(yes) / (P(yes) + P(no)); here yes = 2, no = 1.
    softmax = torch.softmax(logits, 1)
    expected = softmax[:, 2] / (softmax[:, 2] + softmax[:, 1])
    got = cb.yes_probability(logits, yes_id=2, no_id=1)
    assert torch.allclose(got, expected)
    assert got[0].item() == pytest.approx(math.exp(3) / (math.exp(3) + math.exp(1)))
    assert got[1].item() == pytest.approx(0.5)


def test_attribute_score_is_the_product_over_phrases():
    assert cb.attribute_score([0.5, 0.8]) == pytest.approx(0.4)
    assert cb.attribute_score([0.9]) == pytest.approx(0.9)
    assert cb.attribute_score([]) == 1.0  # BLIP_vqa.py counts a missing question as 1


# ---- spatial: relations, determine_position, detections ------------------------------------------------------


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("a wallet on the left of a giraffe", ("wallet", "on the left of", "giraffe")),
        ("a girl on the top of a refrigerator", ("girl", "on the top of", "refrigerator")),
        ("a man near a pig", ("man", "near", "pig")),
        ("a small green triangle to the left of a white cross", ("triangle", "on the left of", "cross")),
        ("a yellow circle below a large blue square", ("circle", "on the bottom of", "square")),
        ("The red hat was on top of the brown coat rack.", ("hat", "on the top of", "rack")),
        ("a red circle and a blue square", None),
    ],
)
def test_parse_spatial(prompt, expected):
    parsed = cb.parse_spatial(prompt)
    assert (parsed and (parsed.subject, parsed.locality, parsed.object)) == expected


A, RIGHT_OF_A = (0, 0, 10, 10), (100, 0, 110, 10)  # centres (5, 5) and (105, 5)


@pytest.mark.parametrize(
    "locality,box1,box2,expected",
    [
        ("on the left of", A, RIGHT_OF_A, 1.0),
        ("on the right of", A, RIGHT_OF_A, 0.0),
        ("on the right of", RIGHT_OF_A, A, 1.0),
        # centres 20 apart in x, 0 in y, IoU = 8000 / 12000 = 2/3 >= 0.1: soft, 0.1 / (2/3)
        ("on the left of", (0, 0, 100, 100), (20, 0, 120, 100), 0.15),
        # more vertical than horizontal: not left, but on top (image y grows downwards)
        ("on the left of", A, (20, 100, 30, 110), 0.0),
        ("on the top of", A, (20, 100, 30, 110), 1.0),
        ("on the bottom of", A, (20, 100, 30, 110), 0.0),
        ("on the bottom of", (20, 100, 30, 110), A, 1.0),
        # near: within 150 along x OR along y is enough; else 150 / the larger distance
        ("near", A, (100, 300, 110, 310), 1.0),
        ("next to", A, (200, 300, 210, 310), 0.5),
        ("on side of", A, (400, 300, 410, 310), 150 / 400),
        ("inside", A, RIGHT_OF_A, 0.0),
    ],
)
def test_determine_position(locality, box1, box2, expected):
    assert cb.determine_position(locality, box1, box2) == pytest.approx(expected)


def test_determine_position_thresholds_are_parameters():
    assert cb.determine_position("on the left of", (0, 0, 100, 100), (20, 0, 120, 100), iou_threshold=0.7) == 1.0
    assert cb.determine_position("near", A, (200, 300, 210, 310), distance_threshold=250) == 1.0


def test_spatial_score_combines_confidences_and_position():
    left, right = (0.8, A), (0.6, RIGHT_OF_A)
    assert cb.spatial_score("on the left of", left, right) == pytest.approx(0.25 * 0.8 + 0.25 * 0.6 + 0.5)
    assert cb.spatial_score("on the right of", left, right) == 0.0  # 0.35 is below the 0.5 floor
    assert cb.spatial_score("on the left of", (1.0, (0, 0, 100, 100)), (1.0, (20, 0, 120, 100))) == pytest.approx(
        0.25 + 0.25 + 0.15 / 2
    )
    assert cb.spatial_score("on the left of", (0.9, A), None) == 0.0  # 0.225, one object found
    assert cb.spatial_score("on the left of", None, None) == 0.0


def test_best_detections_label_each_box_once():
    scores = [[0.9, 0.2], [0.8, 0.85], [0.05, 0.04]]
    boxes = [(0, 0, 1, 1), (2, 2, 3, 3), (4, 4, 5, 5)]
    assert cb.best_detections(scores, boxes, 0.1) == [(0.9, (0, 0, 1, 1)), (0.85, (2, 2, 3, 3))]
    # box 0 is labelled query 1, so query 0 has no box; a threshold above every score finds nothing
    assert cb.best_detections([[0.9, 0.95]], [(0, 0, 1, 1)], 0.1) == [None, (0.95, (0, 0, 1, 1))]
    assert cb.best_detections(scores, boxes, 0.95) == [None, None]


def test_unidet_frame():
    assert cb.unidet_scale(512, 512) == pytest.approx(479 / 512)
    assert cb.unidet_scale(512, 1024) == pytest.approx(480 / 1024)  # the longer side is capped at 480


def test_pixel_boxes_owlv2_pads_to_a_square():
    from itercomp.evaluation.t2i_compbench import pixel_boxes

    box = np.array([[0.5, 0.25, 0.2, 0.1]])  # centre x, centre y, width, height (relative)
    assert pixel_boxes(box, 100, 200, padded=True).tolist() == [[80.0, 40.0, 120.0, 60.0]]
    assert pixel_boxes(box, 100, 200, padded=False).tolist() == [[80.0, 20.0, 120.0, 30.0]]


# ---- CLIPScore and 3-in-1 -------------------------------------------------------------------------------------


def test_clip_similarity_is_the_cosine():
    got = cb.clip_similarity([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0]], [[4.0, 3.0], [0.0, 2.0], [-2.0, -2.0]])
    assert got.tolist() == pytest.approx([24 / 25, 0.0, -1.0])


@pytest.mark.parametrize(
    "prompt,parts",
    [  # from T2I-CompBench's complex_val_spatial, _spatialaction and _action lists
        ("The red hat was on top of the brown coat rack.", ("attribute_binding", "spatial_relationship")),
        ("The bright orange pumpkin sat next to the crisp green apples.",
         ("attribute_binding", "spatial_relationship", "non_spatial_relationship")),
        ("The rectangular mirror was hung above the white sink.", ("attribute_binding", "non_spatial_relationship")),
    ],
)  # fmt: skip
def test_complex_parts(prompt, parts):
    assert cb.complex_parts(prompt) == parts


def test_three_in_one():
    assert cb.three_in_one(0.4, spatial=0.6) == pytest.approx(0.5)
    assert cb.three_in_one(0.4, non_spatial=0.3) == pytest.approx(0.35)
    assert cb.three_in_one(0.3, 0.6, 0.9) == pytest.approx(0.6)


# ---- summary -----------------------------------------------------------------------------------------------------


def test_summarize_rows():
    rows = [
        {"aspect": "complex", "prompt": "p", "score": 0.2, "correct": None},
        {"aspect": "spatial_relationship", "prompt": "a", "score": 1.0, "correct": True},
        {"aspect": "spatial_relationship", "prompt": "b", "score": 0.0, "correct": False},
        {"aspect": "spatial_relationship", "prompt": "c", "score": 0.5, "correct": None},
    ]
    summary = summarize_rows(rows)
    assert list(summary) == ["spatial_relationship", "complex"]  # the order of ASPECTS
    spatial = summary["spatial_relationship"]
    assert spatial["n"] == 3 and spatial["mean_score"] == pytest.approx(0.5)
    assert spatial["stderr"] == pytest.approx(math.sqrt(0.25 / 3))  # sample variance 0.25, over n = 3
    assert spatial["accuracy"] == 0.5  # of the two rows with a verdict
    assert summary["complex"] == {"n": 1, "mean_score": 0.2, "stderr": None, "accuracy": None}


# ---- registry ----------------------------------------------------------------------------------------------------


def test_registry_errors_name_the_problem_and_the_fix(tmp_path):
    import reward_models.evaluator  # noqa: F401  (registers "rewards", as the orchestration does)

    assert {"shapes", "t2i_compbench", "rewards"} <= set(available_evaluators())
    with pytest.raises(ItercompError, match=r"unknown evaluator 'oracle'; available: rewards, shapes, t2i_compbench"):
        build_evaluator("oracle")
    with pytest.raises(ItercompError, match=r"unknown keys \['colour'\]; valid keys are \['batch_size'\]"):
        build_evaluator({"type": "shapes", "colour": "red"})
    with pytest.raises(ItercompError, match=r"batch_size must be int, got 'many'"):
        build_evaluator({"type": "t2i_compbench", "batch_size": "many"})
    with pytest.raises(ItercompError, match=r"batch_size=0 must be >= 1"):
        build_evaluator({"type": "shapes", "batch_size": 0})
    with pytest.raises(ItercompError, match=r"device='gpu' is not a device; use auto, cpu, cuda or cuda:N"):
        build_evaluator({"type": "t2i_compbench", "device": "gpu"})
    with pytest.raises(ItercompError, match=r"needs a 'type'"):
        build_evaluator({"vqa_model": "x"})
    with pytest.raises(ItercompError, match=r"needs path=FOLDER"):
        build_evaluator("rewards")
    with pytest.raises(ItercompError, match=r"is not a folder"):
        build_evaluator({"type": "rewards", "path": str(tmp_path / "missing")})
    with pytest.raises(ItercompError, match=r"cannot import evaluator"):
        build_evaluator("no_such_module:Thing")


def test_registry_builds_by_name_and_by_import_path():
    from itercomp.evaluation.shapes import ShapesEvaluator

    evaluator = build_evaluator({"type": "shapes", "batch_size": "4"})
    assert isinstance(evaluator, ShapesEvaluator) and evaluator.batch_size == 4
    assert evaluator.spec() == {"type": "shapes", "batch_size": 4}
    by_path = build_evaluator("itercomp.evaluation.shapes:ShapesEvaluator")
    assert isinstance(by_path, ShapesEvaluator) and by_path.name == "shapes"
    with pytest.raises(ValueError, match="registered twice"):

        @register_evaluator("shapes")
        class Other(ShapesEvaluator):
            pass


def test_registry_and_evaluators_import_no_torch():
    code = (
        "import sys, itercomp.evaluation, itercomp.evaluation.shapes, itercomp.evaluation.t2i_compbench, "
        "reward_models.evaluator; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ---- shapes ------------------------------------------------------------------------------------------------------


def test_shapes_evaluator_agrees_with_the_oracle():
    from itercomp.world import score

    prompts = [p for aspect in ("attribute_binding", "spatial_relationship", "non_spatial_relationship", "complex")
               for p in generate_prompts(aspect, "test", 2)]  # fmt: skip
    images = [render(p, seed=k) for k, p in enumerate(prompts)]
    images[1] = images[1] * 0  # nothing drawn
    images[3] = images[2]  # another prompt's picture
    aspects = (
        ["attribute_binding"] * 2 + ["spatial_relationship"] * 2 + ["non_spatial_relationship"] * 2 + ["complex"] * 2
    )
    rows = build_evaluator("shapes").score(images, prompts, aspects)
    for image, prompt, row in zip(images, prompts, rows):
        verdict = score(image, prompt)
        assert (row["correct"], row["score"]) == (verdict.correct, verdict.score)
    assert [r["correct"] for r in rows].count(True) == 6 and not rows[1]["correct"] and not rows[3]["correct"]
    assert rows[1]["objects_drawn"] == 0 and rows[1]["coverage"] == 0 and rows[0]["objects_drawn"] == 2
    json.dumps(rows)  # JSON-safe
    with pytest.raises(ItercompError, match="shapes-world prompts only"):
        build_evaluator("shapes").score([images[0]], ["a photo of a cat"], ["attribute_binding"])


def test_evaluate_pipeline_rows_match_the_shapes_evaluator():
    from types import SimpleNamespace

    from itercomp.models.evaluate import evaluate_pipeline

    class Renderer:  # a "pipeline" that draws the ground truth
        def set_progress_bar_config(self, **kwargs):
            pass

        def __call__(self, prompts, generator, output_type, **kwargs):
            return SimpleNamespace(images=np.stack([render(p, seed=k) for k, p in enumerate(prompts)]))

    prompts = [("attribute_binding", "a red circle and a small hollow blue square"),
               ("spatial_relationship", "a green cross above a yellow triangle")]  # fmt: skip
    result = evaluate_pipeline(Renderer(), prompts)
    assert list(result["rows"][0]) == ["objects", "objects_drawn", "object_misses", "coverage", "prompt_id", "prompt",
                                       "aspect", "seed", "correct", "score"]  # fmt: skip
    rows = build_evaluator("shapes").score(list(result["images"]), [p for _, p in prompts], [a for a, _ in prompts])
    for theirs, mine in zip(result["rows"], rows):
        keys = ("objects", "objects_drawn", "object_misses", "coverage", "correct", "score")
        assert {k: theirs[k] for k in keys} == {k: mine[k] for k in keys}


# ---- t2i_compbench on tiny models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_options(tmp_path_factory):
    from itercomp.evaluation.tiny import save_tiny_evaluators

    return save_tiny_evaluators(tmp_path_factory.mktemp("tiny_evaluators"))


T2I_PROMPTS = [
    ("attribute_binding", "a red circle and a blue square"),
    ("spatial_relationship", "a small green triangle to the left of a white cross"),
    ("non_spatial_relationship", "a yellow circle inside a large hollow purple square"),
    ("complex", "a red square touching a blue circle and a green cross to the left of the blue circle"),
    ("complex", "The red hat was on top of the brown coat rack."),
]


def test_save_tiny_evaluators_returns_loadable_options(tiny_options):
    assert set(tiny_options) == {"type", "vqa_model", "detector_model", "clip_model"}
    assert tiny_options["type"] == "t2i_compbench"
    for key in ("vqa_model", "detector_model", "clip_model"):
        assert (Path(tiny_options[key]) / "config.json").is_file()


def test_t2i_compbench_scores_every_aspect_in_range(tiny_options):
    evaluator = build_evaluator({**tiny_options, "detection_threshold": 0.0})  # every object found: the box rules run
    aspects, prompts = zip(*T2I_PROMPTS)
    images = [render("a red circle and a blue square", seed=k, canvas=64) for k in range(len(prompts))]
    rows = evaluator.score(images, list(prompts), list(aspects))
    assert len(rows) == len(prompts) and all(r["correct"] is None and math.isfinite(r["score"]) for r in rows)
    attribute, spatial, non_spatial, complex_a, complex_b = rows
    assert 0 < attribute["score"] < 1 and attribute["phrases"] == ["a red circle", "a blue square"]
    assert attribute["score"] == pytest.approx(math.prod(attribute["p_yes"]))
    assert 0 <= spatial["score"] <= 1 and spatial["objects"] == ["triangle", "cross"]
    assert all(d is not None and len(d["box"]) == 4 for d in spatial["detections"])
    first, second = ((d["confidence"], tuple(d["box"])) for d in spatial["detections"])
    assert spatial["score"] == cb.spatial_score("on the left of", first, second)
    assert -1 <= non_spatial["score"] <= 1
    assert set(complex_a["parts"]) == {"attribute_binding", "spatial_relationship", "non_spatial_relationship"}
    assert complex_a["score"] == pytest.approx(np.mean([p["score"] for p in complex_a["parts"].values()]))
    assert set(complex_b["parts"]) == {"attribute_binding", "spatial_relationship"}
    json.dumps(rows)
    again = evaluator.score(images, list(prompts), list(aspects))
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in rows])


def test_t2i_compbench_one_box_for_a_repeated_noun(tiny_options):
    evaluator = build_evaluator({**tiny_options, "detection_threshold": 0.0})
    (row,) = evaluator.score([render("a red circle and a blue square", 0, canvas=64)], ["a circle next to a circle"],
                             ["spatial_relationship"])  # fmt: skip
    first, second = row["detections"]
    assert first is not None and first == second  # as UniDet's one label finds one box for both
    assert row["score"] == pytest.approx(0.5 * first["confidence"] + 0.5)  # centres 0 apart: near


def test_t2i_compbench_loads_only_the_models_it_needs(tiny_options):
    evaluator = build_evaluator(tiny_options)
    evaluator.score([render("a red circle and a blue square", 0)], ["a red circle and a blue square"],
                    ["attribute_binding"])  # fmt: skip
    assert set(evaluator._models) == {"vqa"}
    missing = build_evaluator({**tiny_options, "clip_model": str(Path(tiny_options["clip_model"]).parent / "none")})
    with pytest.raises(ItercompError, match="cannot load clip_model="):
        missing.score([render("a red circle and a blue square", 0)], ["a red circle"], ["non_spatial_relationship"])


# ---- rewards -----------------------------------------------------------------------------------------------------


def test_rewards_evaluator_scores_with_each_aspects_model():
    import torch

    import reward_models.evaluator  # noqa: F401
    from reward_models.ensemble import RewardEnsemble

    prompts = ["a red circle and a blue square", "a green cross above a yellow triangle",
               "a white circle touching a purple square", "a red square touching a blue circle and a green cross "
               "above the blue circle"]  # fmt: skip
    aspects = ["attribute_binding", "spatial_relationship", "non_spatial_relationship", "complex"]
    images = [render(p, seed=k) for k, p in enumerate(prompts)]
    images[2] = render(prompts[2], seed=2, canvas=48)  # another size in the same call
    rows = build_evaluator({"type": "rewards", "path": str(SHIPPED_REWARDS)}).score(images, prompts, aspects)
    ensemble = RewardEnsemble.from_pretrained(SHIPPED_REWARDS).eval()
    for image, prompt, aspect, row in zip(images, prompts, aspects, rows):
        with torch.no_grad():
            out = ensemble(torch.from_numpy(image[None]).permute(0, 3, 1, 2).float() / 255, [prompt])
        expected = float(np.mean([out[a].item() for a in out])) if aspect == "complex" else out[aspect].item()
        assert row["score"] == pytest.approx(expected, abs=1e-5) and row["correct"] is None
    assert set(rows[3]["rewards"]) == {"attribute_binding", "spatial_relationship", "non_spatial_relationship"}


# ---- itercomp eval -----------------------------------------------------------------------------------------------


def _shapes_folder(folder: Path) -> list[str]:
    prompts = [
        p for aspect in ("attribute_binding", "spatial_relationship") for p in generate_prompts(aspect, "test", 2)
    ]
    (folder / "images").mkdir(parents=True)
    with open(folder / "prompts.jsonl", "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")
            Image.fromarray(render(p, seed=0)).save(folder / "images" / f"{prompt_id(p)}_s0.png")
    Image.fromarray(render(prompts[0], seed=0) * 0).save(folder / "images" / f"{prompt_id(prompts[0])}_s1.png")
    Image.fromarray(render(prompts[0], seed=0)).save(folder / "images" / "unrelated.png")
    return prompts


def test_eval_command_scores_a_folder(tmp_path, capsys):
    prompts = _shapes_folder(tmp_path)
    argv = ["eval", "--prompts", str(tmp_path / "prompts.jsonl"), "--images", str(tmp_path / "images")]
    assert main([*argv, "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["evaluator"] == {"type": "shapes", "batch_size": 16}
    assert len(report["rows"]) == 5 and report["unmatched"] == [str(tmp_path / "images" / "unrelated.png")]
    assert report["summary"]["attribute_binding"]["accuracy"] == pytest.approx(2 / 3)  # the blank image fails
    assert report["summary"]["spatial_relationship"]["accuracy"] == 1.0
    assert {r["prompt"] for r in report["rows"]} == set(prompts)
    out = capsys.readouterr().out
    assert "mean score ± stderr" in out and "66.7%" in out
    assert main([*argv, "--evaluator-config", "batch_size=2"]) == 0  # default --out beside the images
    assert json.loads((tmp_path / "images" / "scores_shapes.json").read_text())["evaluator"]["batch_size"] == 2


def test_eval_command_rewards_from_a_yaml_file(tmp_path):
    _shapes_folder(tmp_path)
    (tmp_path / "rewards.yaml").write_text(f"type: rewards\npath: {SHIPPED_REWARDS}\nbatch_size: 3\n")
    argv = ["eval", "--prompts", str(tmp_path / "prompts.jsonl"), "--images", str(tmp_path / "images")]
    assert main([*argv, "--evaluator-config", str(tmp_path / "rewards.yaml"), "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["evaluator"]["type"] == "rewards" and report["evaluator"]["batch_size"] == 3
    assert all(r["correct"] is None and math.isfinite(r["score"]) for r in report["rows"])
    assert report["summary"]["attribute_binding"]["accuracy"] is None


def test_eval_command_t2i_compbench_names_and_aspect_flag(tmp_path, tiny_options, capsys):
    prompt = "a photo of a cat on the left of a dog"
    (tmp_path / "prompts.txt").write_text(prompt + "\n")
    (tmp_path / "samples").mkdir()
    for k in range(2):
        Image.fromarray(render("a red circle to the left of a blue square", k)).save(
            tmp_path / "samples" / f"{prompt}_{k:06d}.png"
        )
    argv = ["eval", "--prompts", str(tmp_path / "prompts.txt"), "--images", str(tmp_path / "samples")]
    assert main(argv) == 2  # a prompt outside the shapes world has no aspect of its own
    assert "--aspect" in capsys.readouterr().err
    config = [f"{k}={v}" for k, v in tiny_options.items() if k != "type"]
    argv += ["--aspect", "spatial_relationship", "--evaluator", "t2i_compbench", "--evaluator-config", *config]
    assert main([*argv, "--out", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["relation"] == "on the left of" and r["objects"] == ["cat", "dog"] for r in rows)


def _iterate_round(run: Path, k: int, prompts: list[str], blank: bool = False) -> None:
    from itercomp.io import write_jsonl
    from itercomp.loop.report import eval_image_name

    folder = run / f"round_{k}" / "eval"
    (folder / "images").mkdir(parents=True)
    rows = []
    for p in prompts:
        for seed in (0, 1):
            image = render(p, seed) * (0 if blank else 1)
            Image.fromarray(image).save(folder / "images" / eval_image_name(prompt_id(p), seed))
            aspect = "attribute_binding" if " and " in p else "spatial_relationship"
            rows.append({"prompt_id": prompt_id(p), "prompt": p, "aspect": aspect, "seed": seed, "correct": True})
    write_jsonl(folder / "rows.jsonl", rows)


def test_eval_command_scores_an_iterate_round(tmp_path, capsys):
    prompts = ["a red circle and a blue square", "a green cross above a yellow triangle"]
    run = tmp_path / "run"
    _iterate_round(run, 0, prompts, blank=True)
    _iterate_round(run, 1, prompts)
    assert main(["eval", "--run", str(run)]) == 0  # the last evaluated round
    report = json.loads((run / "round_1" / "eval" / "scores_shapes.json").read_text())
    assert report["source"] == {"run": str(run), "round": 1} and len(report["rows"]) == 4
    assert all(s["accuracy"] == 1.0 for s in report["summary"].values())
    assert {r["seed"] for r in report["rows"]} == {0, 1}
    assert main(["eval", "--run", str(run), "--round", "0", "--out", str(tmp_path / "r0.json")]) == 0
    assert all(s["accuracy"] == 0.0 for s in json.loads((tmp_path / "r0.json").read_text())["summary"].values())
    (run / "round_1" / "rewards").symlink_to(SHIPPED_REWARDS)  # the round's reward models, found by default
    assert main(["eval", "--run", str(run), "--round", "1", "--evaluator", "rewards"]) == 0
    report = json.loads((run / "round_1" / "eval" / "scores_rewards.json").read_text())
    assert report["evaluator"]["path"] == str(run / "round_1" / "rewards")
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--round", "3"]) == 2
    assert "round 3" in capsys.readouterr().err


def test_eval_command_needs_one_source(tmp_path, capsys):
    assert main(["eval", "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "give either --prompts FILE and --images DIR, or --run RUN_DIR" in err and len(err.splitlines()) == 1


# ---- export to T2I-CompBench's layout ----------------------------------------------------------------------------


def test_export_writes_t2i_compbench_names(tmp_path, capsys):
    rows = [
        {"prompt": "a red circle and a blue square", "aspect": "attribute_binding", "category": "color"},
        {"prompt": "a large red circle and a small blue square", "aspect": "attribute_binding"},
        {"prompt": "a green cross above a yellow triangle"},
        {"prompt": "a white circle touching a purple square"},
        {"prompt": "a red square touching a blue circle and a green cross above the blue circle"},
    ]
    (tmp_path / "images").mkdir()
    with open(tmp_path / "prompts.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            for seed in (0, 1):
                name = f"{prompt_id(row['prompt'])}_s{seed}.png"
                Image.fromarray(render(row["prompt"], seed)).save(tmp_path / "images" / name)
    out = tmp_path / "t2i"
    argv = ["eval", "--prompts", str(tmp_path / "prompts.jsonl"), "--images", str(tmp_path / "images")]
    assert main([*argv, "--export-t2i-compbench", str(out)]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert files == [
        "attribute_binding/samples/a large red circle and a small blue square_000000.png",
        "attribute_binding/samples/a large red circle and a small blue square_000001.png",
        "color/samples/a red circle and a blue square_000000.png",
        "color/samples/a red circle and a blue square_000001.png",
        "complex/samples/a red square touching a blue circle and a green cross above the blue circle_000000.png",
        "complex/samples/a red square touching a blue circle and a green cross above the blue circle_000001.png",
        "non_spatial/samples/a white circle touching a purple square_000000.png",
        "non_spatial/samples/a white circle touching a purple square_000001.png",
        "spatial/samples/a green cross above a yellow triangle_000000.png",
        "spatial/samples/a green cross above a yellow triangle_000001.png",
    ]
    exported = np.asarray(Image.open(out / "spatial" / "samples" / "a green cross above a yellow triangle_000001.png"))
    assert np.array_equal(exported, render("a green cross above a yellow triangle", 1))
    record = [json.loads(line) for line in (out / "color" / "export.jsonl").read_text().splitlines()][1]
    assert record["question_id"] == 1 and record["path"].endswith("_s1.png")


def test_export_refuses_what_t2i_compbench_would_misread(tmp_path):
    from itercomp.evaluation.files import export_t2i_compbench

    image = tmp_path / "a.png"
    Image.fromarray(render("a red circle and a blue square", 0)).save(image)
    entry = {"path": str(image), "prompt_id": "x", "aspect": "attribute_binding"}
    with pytest.raises(ItercompError, match="holds '_' or '/'"):
        export_t2i_compbench([{**entry, "prompt": "a red_circle"}], tmp_path / "out")
    with pytest.raises(ItercompError, match="use color, shape, texture"):
        export_t2i_compbench([{**entry, "prompt": "a red circle", "category": "colour"}], tmp_path / "out")
