"""Ranking one model's own samples: exact augmentations, own-sample rankings, conservative ensembles, evaluation."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from itercomp.errors import ItercompError, PromptError
from itercomp.io import read_json, read_jsonl, save_png, write_jsonl
from itercomp.records import Candidate, Ranking
from itercomp.world import generate_prompts, parse, render, score, split_of
from itercomp.world.augment import colour_swap_negatives, contrastive_prompts, mirror, swap_colors
from reward_models.ensemble import AspectEnsemble, RewardEnsemble, aggregate_rewards
from reward_models.evaluation import SameModelTally, evaluate_rankings, same_model_groups
from reward_models.model import RewardModel
from reward_models.own_samples import OwnSamplesConfig, build_rankings, count_pairs, oracle_key, ranked

TINY = {"width": 32, "image_layers": 1, "fusion_layers": 1, "heads": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- augmentations --------------------------------------------------------------------------------------------


def test_mirror_keeps_the_oracle_verdict_and_swaps_left_and_right():
    image, prompt = (
        render(parse("a red circle to the left of a blue square"), 0, 32),
        "a red circle to the left of a blue square",
    )
    flipped, new = mirror(image, prompt)
    assert new == "a red circle to the right of a blue square"
    assert np.array_equal(flipped, image[:, ::-1])
    assert score(image, prompt).correct and score(flipped, new).correct
    assert not score(flipped, prompt).correct  # the flipped image contradicts the old prompt
    for aspect in ("attribute_binding", "spatial_relationship", "non_spatial_relationship", "complex"):
        for k, p in enumerate(generate_prompts(aspect, "train", 15, seed=3)):
            x = render(parse(p), k, 32)
            for axis in ("horizontal", "vertical"):
                try:
                    y, q = mirror(x, p, axis)
                except PromptError:
                    assert axis == "vertical" and "triangle" in p
                    continue
                assert (score(y, q).correct, score(y, q).score) == pytest.approx(
                    (score(x, p).correct, score(x, p).score)
                )
    y, q = mirror(
        render(parse("a green cross above a white circle"), 1, 32), "a green cross above a white circle", "vertical"
    )
    assert q == "a green cross below a white circle" and score(y, q).correct


def test_mirror_and_swap_errors_name_the_problem():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(PromptError, match="triangle"):
        mirror(image, "a red triangle above a blue square", "vertical")
    with pytest.raises(ValueError, match="axis"):
        mirror(image, "a red circle and a blue square", "diagonal")
    with pytest.raises(ValueError, match="uint8"):
        mirror(image.astype(float), "a red circle and a blue square")
    with pytest.raises(ValueError, match="unknown colour"):
        swap_colors(image, "red", "pink")
    with pytest.raises(ValueError, match="two different"):
        swap_colors(image, "red", "red")


def test_colour_swaps_break_the_binding_and_keep_the_drawing():
    prompt = "a red circle and a hollow blue square"
    image = render(parse(prompt), 0, 32)
    ((kind, negative),) = colour_swap_negatives(image, prompt)
    assert kind == "swap-red-blue"
    assert not score(negative, prompt).correct
    assert score(negative, "a blue circle and a hollow red square").correct  # the same drawing, colours exchanged
    assert ((negative > 0).any(-1) == (image > 0).any(-1)).all()
    # a pixel's offset from its palette colour is kept
    noisy = np.clip(image.astype(int) + 3, 0, 255).astype(np.uint8)
    assert np.array_equal(swap_colors(swap_colors(noisy, "red", "blue"), "red", "blue"), noisy)


def test_contrastive_prompts_are_distinct_contradicting_variants():
    prompt = "a red circle to the left of a blue square"
    variants = contrastive_prompts(prompt)
    assert "a red circle to the right of a blue square" in variants
    assert "a blue circle to the left of a red square" in variants
    assert prompt not in variants and len(set(variants)) == len(variants)
    assert contrastive_prompts(prompt, limit=2) == variants[:2]
    image = render(parse(prompt), 0, 32)
    assert all(not score(image, v).correct for v in variants)


# ---- own-sample rankings --------------------------------------------------------------------------------------


def _samples(tmp_path: Path, prompts: list[str], seeds: int = 3) -> list[dict]:
    """Stand-ins for one model's seeds: renders of the prompt or of a one-attribute edit of it."""
    from itercomp.world.edits import edits

    rows, rng = [], np.random.default_rng(0)
    for aspect, prompt in prompts:
        scene = parse(prompt)
        for s in range(seeds):
            drawn = scene if s % 2 == 0 else edits(scene, rng)[0][1]
            try:
                image = render(drawn, s, 32)
            except PromptError:
                image = render(scene, s + 100, 32)
            path = f"images/{aspect}-{s}-{abs(hash(prompt))}.png"
            save_png(tmp_path / path, image)
            rows.append({"aspect": aspect, "prompt": prompt, "seed": s, "path": path})
    return rows


def test_own_sample_rankings_hold_seeds_negatives_mirrors_and_renders(tmp_path):
    prompt = next(p for p in generate_prompts("spatial_relationship", "train", 200)
                  if split_of(mirror(np.zeros((4, 4, 3), np.uint8), p)[1]) == "train")  # fmt: skip
    rows = _samples(tmp_path, [("spatial_relationship", prompt)], seeds=3)
    rankings = build_rankings(rows, tmp_path, tmp_path / "out", OwnSamplesConfig(negatives_from=1, edit_renders=2))
    seeds, mirrored, renders = rankings
    assert [c.generator for c in seeds.candidates][:3] == ["base"] * 3 and len(seeds.candidates) == 4
    assert seeds.candidates[3].generator.startswith("base+swap-")
    assert mirrored.prompt == mirror(np.zeros((4, 4, 3), np.uint8), prompt)[1] and len(mirrored.candidates) == 4
    assert {c.generator.split("+")[0] for c in renders.candidates} == {"render"}
    for ranking in rankings:  # every candidate exists, and the order is the oracle's (verdict, then soft score)
        images = {c.image_id: np.asarray(Image.open(tmp_path / "out" / c.path)) for c in ranking.candidates}
        keys = [oracle_key(images[i], ranking.prompt) for i in ranking.order]
        assert keys == sorted(keys, reverse=True)
        assert len(ranking.pairs()) == sum(a != b for i, a in enumerate(keys) for b in keys[i + 1 :])
    assert count_pairs(rankings) == sum(len(r.pairs()) for r in rankings)
    assert same_model_groups(seeds)[0] == [0, 1, 2]


def test_mirrored_prompts_in_another_split_are_dropped(tmp_path):
    prompts = generate_prompts("spatial_relationship", "train", 60)
    crossing = next(p for p in prompts if split_of(mirror(np.zeros((4, 4, 3), np.uint8), p)[1]) != "train")
    rows = _samples(tmp_path, [("spatial_relationship", crossing)], seeds=2)
    rankings = build_rankings(rows, tmp_path, tmp_path / "out", OwnSamplesConfig(negatives_from=0, edit_renders=0))
    assert [r.prompt for r in rankings] == [crossing]


def test_own_sample_rankings_refuse_single_seeds_and_missing_fields(tmp_path):
    rows = _samples(tmp_path, [("attribute_binding", "a red circle and a blue square")], seeds=1)
    with pytest.raises(ItercompError, match=">= 2 seeds"):
        build_rankings(rows, tmp_path, tmp_path / "out")
    with pytest.raises(ItercompError, match="lacks seed"):
        build_rankings([{"aspect": "attribute_binding", "prompt": "x", "path": "y"}], tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match=">= 0"):
        OwnSamplesConfig(negatives_from=-1)


def test_ranked_ties_equal_keys():
    cands = [Candidate(f"c{i}", "base", i, f"{i}.png", str(i)) for i in range(4)]
    ranking = ranked("a red circle and a blue square", "attribute_binding", cands, [0.5, 1.7, 0.5, 0.1])
    assert ranking.order == ["c1", "c0", "c2", "c3"] and ranking.ranks == [0, 1, 1, 3]
    assert ("c0", "c2") not in ranking.pairs() and len(ranking.pairs()) == 5


# ---- ensembles ------------------------------------------------------------------------------------------------


def test_aggregates_are_conservative():
    stacked = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    assert aggregate_rewards(stacked, "mean").tolist() == [2.0, 2.0]
    assert aggregate_rewards(stacked, "min").tolist() == [1.0, 2.0]
    low = aggregate_rewards(stacked, "mean_minus_std", 1.0)
    assert low[0] < 2.0 and low[1] == 2.0  # disagreement costs, agreement does not
    assert torch.equal(aggregate_rewards(stacked[:1], "min"), stacked[0])
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_rewards(stacked, "max")


def _members(n: int) -> list[RewardModel]:
    out = []
    for k in range(n):
        torch.manual_seed(k)
        out.append(RewardModel.for_shapes_world("attribute_binding", **TINY))
    return out


def test_ensemble_of_members_is_differentiable_saves_and_loads(tmp_path):
    members = _members(2)
    ensemble = RewardEnsemble({"attribute_binding": members}, aggregate="min")
    assert ensemble.members == 2
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    prompts = ["a red circle and a blue square"] * 2
    out = ensemble(images, prompts)["attribute_binding"]
    each = torch.stack([m.score(images, prompts) for m in members])
    assert torch.allclose(out, each.min(0).values)
    out.sum().backward()
    assert images.grad.abs().sum() > 0
    ensemble.save_pretrained(tmp_path / "ens")
    spec = read_json(tmp_path / "ens" / "ensemble.json")
    assert spec["members"] == ["member_0", "member_1"] and spec["aggregate"] == "min"
    loaded = RewardEnsemble.from_pretrained(tmp_path / "ens", aspects=("attribute_binding",))
    again = loaded(images.detach(), prompts)["attribute_binding"]
    assert torch.allclose(again, out.detach(), atol=1e-5)
    mean = RewardEnsemble.from_pretrained(tmp_path / "ens", aspects=("attribute_binding",), aggregate="mean")
    assert torch.allclose(mean(images.detach(), prompts)["attribute_binding"], each.detach().mean(0), atol=1e-5)
    # a list of plain folders is an ensemble too
    listed = RewardEnsemble.from_pretrained([tmp_path / "ens/member_0", tmp_path / "ens/member_1"],
                                            aspects=("attribute_binding",), aggregate="min")  # fmt: skip
    assert torch.allclose(listed(images.detach(), prompts)["attribute_binding"], again, atol=1e-5)


def test_contrast_subtracts_the_variants_mean():
    model = _members(1)[0]
    ensemble = RewardEnsemble({"attribute_binding": model}, contrast="shapes_one_edit", contrast_limit=3)
    images = torch.rand(2, 3, 32, 32)
    prompts = ["a red circle and a blue square", "a green cross and a white triangle"]
    out = ensemble(images, prompts)["attribute_binding"]
    for i, p in enumerate(prompts):
        variants = contrastive_prompts(p, limit=3)
        own = model.score(images[i : i + 1], [p])
        other = model.score(images[i : i + 1].expand(len(variants), -1, -1, -1), variants).mean()
        assert torch.allclose(out[i], (own - other)[0], atol=1e-5)


def test_ensemble_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="contrast"):
        RewardEnsemble({"attribute_binding": _members(1)[0]}, contrast="nope")
    with pytest.raises(ValueError, match="spread_weight"):
        AspectEnsemble(_members(1), spread_weight=-1)
    with pytest.raises(ItercompError, match="no reward model"):
        RewardEnsemble.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="prompts"):
        RewardEnsemble({"attribute_binding": _members(1)[0]})(
            torch.rand(2, 3, 32, 32), ["a red circle and a blue square"]
        )


# ---- same-model evaluation ------------------------------------------------------------------------------------


def test_same_model_tally_counts_verdict_pairs_and_best_of():
    tally = SameModelTally(best_of=4)
    scores = np.array([0.9, 0.6, 0.5, 0.2])
    correct = np.array([1.0, 0.0, 0.0, 0.0])
    tally.add(np.array([0.1, 0.5, 0.0, -1.0]), scores, correct)  # picks seed 1 (wrong); seed 0 beats 2 and 3 only
    r = tally.result()
    assert (r["verdict_pairs"], r["verdict_pair_accuracy"]) == (3, pytest.approx(2 / 3))
    assert r["soft_pairs"] == 6 and r["soft_pair_accuracy"] == pytest.approx(5 / 6)  # only seeds 0-1 wrong
    assert (r["pick_accuracy"], r["random_accuracy"], r["oracle_pick_accuracy"]) == (0.0, 0.25, 1.0)
    assert r["gain_share"] == pytest.approx(-1 / 3)
    tally.add(np.array([2.0, 0.5, 0.0, -1.0]), scores, correct)  # right this time
    assert tally.result()["gain_share"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="best_of"):
        SameModelTally(best_of=1)


def test_evaluate_rankings_reports_same_model_metrics(tmp_path):
    prompt = "a red circle and a hollow blue square"
    scene = parse(prompt)
    images = [render(scene, 0, 32), render(scene.with_object(0, shape="square"), 1, 32),
              render(scene, 2, 32), render(scene.with_object(1, color="green"), 3, 32)]  # fmt: skip
    candidates = []
    for s, image in enumerate(images):
        candidates.append(Candidate(f"s{s}", "base", s, f"{s}.png", save_png(tmp_path / f"{s}.png", image)))
    ranking = ranked(prompt, "attribute_binding", candidates, [oracle_key(x, prompt) for x in images])
    truth = {f"s{s}": oracle_key(x, prompt) for s, x in enumerate(images)}

    class Oracle:  # a scorer that is the oracle itself gets every pair and the best pick
        config = type("C", (), {"image_size": 32})

        def score(self, batch, prompts):
            from itercomp.world import score as oracle

            return torch.tensor([float(oracle(x, p).correct) + oracle(x, p).score for x, p in zip(batch, prompts)])

    result = evaluate_rankings(Oracle(), [ranking], tmp_path)["same_model"]
    assert result["verdict_pairs"] == 4 and result["verdict_pair_accuracy"] == 1.0
    assert result["pick_accuracy"] == result["oracle_pick_accuracy"] == 1.0 and result["random_accuracy"] == 0.5
    assert result["gain_share"] == 1.0 and truth["s0"] > truth["s1"]
    write_jsonl(tmp_path / "r.jsonl", [ranking.to_dict()])
    assert Ranking.from_dict(ranking.to_dict()).ranks == ranking.ranks


def test_rewards_export_and_eval_take_an_ensemble_folder(tmp_path, capsys):
    from itercomp.cli import main

    prompt = "a red circle and a hollow blue square"
    scene = parse(prompt)
    images = [render(scene, 0, 32), render(scene.with_object(0, shape="square"), 1, 32), render(scene, 2, 32)]
    candidates = [Candidate(f"s{s}", "base", s, f"{s}.png", save_png(tmp_path / f"{s}.png", x)) for s, x in
                  enumerate(images)]  # fmt: skip
    ranking = ranked(prompt, "attribute_binding", candidates, [oracle_key(x, prompt) for x in images])
    write_jsonl(tmp_path / "rankings.jsonl", [ranking.to_dict()])
    RewardEnsemble({"attribute_binding": _members(2)}, aggregate="min").save_pretrained(tmp_path / "ens")

    assert main(["rewards", "export", "--models", str(tmp_path / "ens"), "--out", str(tmp_path / "exp")]) == 0
    spec = read_json(tmp_path / "exp" / "ensemble.json")
    assert spec["members"] == ["member_0", "member_1"] and spec["aggregate"] == "min"
    assert all((tmp_path / "exp" / m / "attribute_binding" / "config.json").is_file() for m in spec["members"])

    args = ["rewards", "eval", "--models", str(tmp_path / "exp"), "--rankings", str(tmp_path / "rankings.jsonl"),
            "--split", "all", "--out", str(tmp_path / "e.json")]  # fmt: skip
    assert main(args) == 0
    result = read_json(tmp_path / "e.json")["results"]
    assert list(result) == ["attribute_binding"] and result["attribute_binding"]["pairs"] == len(ranking.pairs()) > 0
    assert "same model" in capsys.readouterr().out


# ---- symmetry views -------------------------------------------------------------------------------------------


def test_symmetry_views_keep_every_verdict_and_are_differentiable():
    from itercomp.world.augment import symmetry_views, view_specs

    specs = view_specs(8, seed=1)
    assert specs[0] == (False, False, None) and specs[3][:2] == (True, True) and specs[5][2] is not None
    prompts = ["a red circle to the left of a blue square", "a green triangle above a white cross",
               "a small yellow circle inside a large hollow purple square", "a cyan cross and a solid orange circle"]  # fmt: skip
    arrays = [render(parse(p), k, 32) for k, p in enumerate(prompts)]
    images = torch.tensor(np.stack(arrays), dtype=torch.float32).permute(0, 3, 1, 2).div(255).requires_grad_(True)
    views = symmetry_views(images, prompts, count=8, seed=1)
    assert len(views) == 8 and views[0][1] == prompts
    assert views[1][1][0] == "a red circle to the right of a blue square"
    assert views[2][1][1] == "a green triangle above a white cross"  # a triangle is never flipped top-bottom
    for x, texts in views:
        for image, text, original in zip(x, texts, prompts):
            array = (image.detach().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            assert score(array, text).correct == score(arrays[prompts.index(original)], original).correct
    sum(x.sum() for x, _ in views).backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="view count"):
        view_specs(0)


def test_ensemble_views_average_the_model_over_views():
    from itercomp.world.augment import symmetry_views

    model = _members(1)[0]
    ensemble = RewardEnsemble({"attribute_binding": model}, views="shapes_symmetries", view_count=5)
    images = torch.rand(2, 3, 32, 32)
    prompts = ["a red circle to the left of a blue square", "a green cross and a white triangle"]
    expected = torch.stack([model.score(x, p) for x, p in symmetry_views(images, prompts, 5)]).mean(0)
    assert torch.allclose(ensemble(images, prompts)["attribute_binding"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="views"):
        RewardEnsemble({"attribute_binding": model}, views="rotations")


# ---- the loop's rankings hold several seeds of the current model ----------------------------------------------


def test_round_gallery_renders_several_seeds_of_the_current_model(tmp_path):
    import yaml

    from annotation_app.tasks import tasks_from_gallery
    from gallery import load_gallery
    from itercomp.loop.config import IterateConfig
    from itercomp.loop.layout import RunLayout
    from itercomp.loop.run import Run, prompt_pools, render_round_gallery

    path = tmp_path / "gallery.yaml"
    path.write_text(yaml.safe_dump({"name": "procedural", "members": [
        {"name": "layout_planner", "type": "layout_planner"}, {"name": "bag_of_words", "type": "bag_of_words"}]}))  # fmt: skip
    gallery = load_gallery(path)
    config = IterateConfig(output_dir=str(tmp_path / "run"), gallery=str(path), base_member="layout_planner",
                           prompts_per_aspect=2, val_prompts_per_aspect=1, current_model_seeds=3)  # fmt: skip
    run = Run(config, RunLayout(tmp_path / "run"), gallery, gallery.select(["layout_planner"])[0],
              finetune_fn=None, feedback_config_cls=None, log=lambda _: None, prompts=prompt_pools(config))  # fmt: skip
    summary = render_round_gallery(run, 1)
    assert summary["same_model"] == {"member": "layout_planner", "seeds": 3, "images": 9 * 3, "pairs_per_ranking": 3}
    tasks = tasks_from_gallery(run.layout.stage(1, "gallery"))
    assert len(tasks) == 9
    for task in tasks:
        seeds = sorted(c.seed for c in task.candidates if c.generator == "layout_planner")
        assert seeds == [0, 1, 2] and [c.seed for c in task.candidates if c.generator == "bag_of_words"] == [0]
    with pytest.raises(ItercompError, match="current.model.seeds"):
        IterateConfig(current_model_seeds=0)


def test_training_on_own_sample_rankings_with_symmetry_views(tmp_path):
    from reward_models.config import RewardTrainConfig
    from reward_models.training import random_view, train

    prompts = [("attribute_binding", p) for p in generate_prompts("attribute_binding", "train", 4)]
    prompts += [("attribute_binding", p) for p in generate_prompts("attribute_binding", "val", 2)]
    rows = _samples(tmp_path, prompts, seeds=3)
    rankings = build_rankings(rows, tmp_path, tmp_path / "data", OwnSamplesConfig(negatives_from=1, edit_renders=1))
    write_jsonl(tmp_path / "data" / "rankings.jsonl", [r.to_dict() for r in rankings])
    config = RewardTrainConfig(rankings=str(tmp_path / "data" / "rankings.jsonl"), output_dir=str(tmp_path / "rm"),
                               aspects=("attribute_binding",), epochs=2, batch_rankings=4, cpu=True, threads=1,
                               train_views="shapes_symmetries", **TINY)  # fmt: skip
    summary = train(config)["attribute_binding"]
    assert summary["epochs_run"] == 2 and (tmp_path / "rm" / "attribute_binding" / "config.json").is_file()
    images = torch.rand(2, 3, 32, 32)
    viewed, texts = random_view(images, ["a red circle to the left of a blue square"] * 2, np.random.default_rng(0))
    assert viewed.shape == images.shape and len(texts) == 2 and parse(texts[0])
    with pytest.raises(ItercompError, match="shapes-world prompts"):
        random_view(images, ["a photo of a cat"] * 2, np.random.default_rng(0))
    with pytest.raises(ItercompError, match="train_views"):
        RewardTrainConfig(rankings="r", output_dir="o", train_views="rotations")


def test_bench_test_rankings_hold_the_seeds_in_the_oracles_order(tmp_path):
    from bench_helpers import load_bench

    bench = load_bench("reward_own_samples")
    prompt = "a red circle and a blue square"
    images = np.zeros((3, 1, 32, 32, 3), np.uint8)
    images[:, 0, 4:8, 4:8] = (230, 40, 40)
    images[2, 0, 20:24, 20:24] = (50, 90, 235)  # seed 2 a little different, so the content hashes differ
    data = {"attribute_binding": {"images": images, "prompts": [prompt], "scores": np.array([[0.2], [0.5], [0.9]]),
                                  "correct": np.array([[0.0], [0.0], [1.0]])}}  # fmt: skip
    path = bench.test_rankings(data, tmp_path)
    (ranking,) = [Ranking.from_dict(r) for r in read_jsonl(path)]
    assert [c.seed for c in ranking.candidates] == [0, 1, 2] and {c.generator for c in ranking.candidates} == {"base"}
    assert [int(i[-1]) for i in ranking.order] == [2, 1, 0]
    assert same_model_groups(ranking) == [[0, 1, 2]]
