"""The iterative loop: the insertion rule, the config, and tiny end-to-end runs (kill + resume, human mode)."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from itercomp.config import add_config_arguments
from itercomp.errors import ItercompError
from itercomp.loop.config import IterateConfig, load_iterate_config, section_config
from itercomp.loop.insertion import best_gap, insert_candidates
from itercomp.loop.layout import STAGES, RunLayout
from itercomp.records import Candidate, Ranking
from itercomp.world.vocab import ASPECTS, REWARD_ASPECTS

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- insertion --------------------------------------------------------------------------------------------------


def _candidate(name: str) -> Candidate:
    return Candidate(name, "gen", 0, f"images/{name}.png", "")


def _ranking(order, ranks=None) -> Ranking:
    return Ranking("p1", "a red circle and a blue square", "attribute_binding", [_candidate(c) for c in order],
                   list(order), "alice", round=1, ranks=ranks)  # fmt: skip


def _insert(order, scores, new, ranks=None) -> Ranking:
    return insert_candidates(
        _ranking(order, ranks), [_candidate(n) for n in new], scores, annotator="round_1/attribute_binding", round=2
    )


def test_insertion_where_the_reward_model_agrees_sorts_by_score_top_and_bottom_included():
    order, scores = ["a", "b", "c"], {"a": 3.0, "b": 2.0, "c": 1.0}
    assert _insert(order, {**scores, "x": 5.0}, ["x"]).order == ["x", "a", "b", "c"]  # the top
    assert _insert(order, {**scores, "x": 2.5}, ["x"]).order == ["a", "x", "b", "c"]
    assert _insert(order, {**scores, "x": -4.0}, ["x"]).order == ["a", "b", "c", "x"]  # the bottom
    grown = _insert(order, {**scores, "x": 2.5}, ["x"])
    assert grown.annotator == "reward_model:round_1/attribute_binding" and grown.round == 2
    assert [c.image_id for c in grown.candidates] == ["a", "b", "c", "x"]
    assert grown.ranks is None and grown.prompt_id == "p1"


def test_one_misscored_original_near_the_bottom_does_not_pin_the_new_image():
    # The reward model scores d (ranked last by the humans) above x; IterComp's bottom-up scan would stop at d
    # and leave x last, although a and b above it and c outscore or undercut it as a whole.
    order, scores = ["a", "b", "c", "d"], {"a": 3.0, "b": 2.0, "c": 0.0, "d": 1.5, "x": 1.0}
    assert _insert(order, scores, ["x"]).order == ["a", "b", "x", "c", "d"]


def test_equal_scores_go_below_and_new_images_in_one_gap_are_ordered_by_score():
    assert _insert(["a", "b"], {"a": 1.0, "b": 1.0, "x": 1.0}, ["x"]).order == ["a", "b", "x"]
    scores = {"a": 3.0, "b": 0.0, "x": 1.0, "y": 2.0}
    assert _insert(["a", "b"], scores, ["x", "y"]).order == ["a", "y", "x", "b"]
    assert _insert(["a", "b"], scores, ["y", "x"]).order == ["a", "y", "x", "b"]  # independent of input order


def test_insertion_keeps_tied_groups_whole():
    scores = {"a": 3.0, "b": 1.0, "c": 2.9, "d": 0.0, "x": 2.0}
    grown = _insert(["a", "b", "c", "d"], scores, ["x"], ranks=[1, 2, 2, 3])
    assert grown.order == ["a", "x", "b", "c", "d"]  # not between b and c, which the humans tied
    assert grown.ranks == [1, 2, 3, 3, 4]


def test_insertion_refuses_missing_scores_and_known_images():
    with pytest.raises(ItercompError, match="no attribute_binding reward score for image x"):
        _insert(["a", "b"], {"a": 1.0, "b": 0.0}, ["x"])
    with pytest.raises(ItercompError, match="already holds a"):
        _insert(["a", "b"], {"a": 1.0, "b": 0.0}, ["a"])


def _log_likelihood(existing, new: float, gap: int) -> float:
    """Bradley-Terry log-likelihood of the new image's pairs when it sits below the first `gap` candidates."""
    above = sum(math.log(1 / (1 + math.exp(-(s - new)))) for s in existing[:gap])
    below = sum(math.log(1 / (1 + math.exp(-(new - s)))) for s in existing[gap:])
    return above + below


def test_chosen_gap_maximises_the_bradley_terry_likelihood_and_keeps_the_order():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 7))
        existing = [round(float(v), 2) for v in rng.normal(size=n)]
        new = round(float(rng.normal()), 2)
        best = max(_log_likelihood(existing, new, g) for g in range(n + 1))
        assert _log_likelihood(existing, new, best_gap(existing, new)) == pytest.approx(best, abs=1e-9)
        names = [f"c{i}" for i in range(n)]
        grown = _insert(names, {**dict(zip(names, existing)), "x": new}, ["x"])
        assert [i for i in grown.order if i != "x"] == names


# ---- config -----------------------------------------------------------------------------------------------------


@dataclass
class FakeFeedbackConfig:
    """Stands in for itercomp.finetune.FeedbackConfig in these tests (same loop-owned field)."""

    output_dir: str
    max_steps: int = 1
    learning_rate: float = 1e-5
    batch_size: int = 4
    ema_decay: float = 0.0
    eval_prompts: int = 0
    checkpoint_every: int = 0
    num_inference_steps: int = 40
    guidance_scale: float = 1.0
    seed: int = 0
    pretrain_loss_weight: float = 0.0
    regulariser_data: str | None = None
    regulariser_samples: int = 0


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, IterateConfig)
    return parser.parse_args(argv)


def test_config_from_yaml_and_flags_merges_sections_key_by_key(tmp_path):
    path = tmp_path / "iterate.yaml"
    path.write_text(yaml.safe_dump({"rounds": 2, "rewards": {"epochs": 7}, "finetune": {"max_steps": 9}}))
    args = _parse(["--config", str(path), "--rounds", "4", "--rewards", "learning_rate=1e-4",
                   "--finetune", "learning_rate=3e-6", "--eval_seeds", "0", "1"])  # fmt: skip
    config = load_iterate_config(args)
    assert config.rounds == 4 and config.eval_seeds == (0, 1)
    assert config.rewards["epochs"] == 7 and config.rewards["learning_rate"] == 1e-4
    assert config.rewards["batch_rankings"] == 16  # the loop's default survives a partial section
    feedback = section_config("finetune", config.finetune, FakeFeedbackConfig, output_dir="x")
    assert feedback.max_steps == 9 and feedback.learning_rate == 3e-6  # "3e-6" from the flag, typed as float


@pytest.mark.parametrize(
    "values,needle",
    [
        ({"rewards": {"output_dir": "x"}}, "set by the loop"),
        ({"rewards": {"epoch": 2}}, "rewards: unknown keys \\['epoch'\\]"),
        ({"annotators": "crowd"}, "--annotators must be one of"),
        ({"members": ("layout_planner",)}, "leaves out the fine-tuned member 'base'"),
        ({"rewards": {"epochs": "many"}}, "RewardTrainConfig.epochs must be int"),
        ({"reward": "oracle", "finetune": {"grad_mode": "refl"}}, "reward=oracle has no gradient"),
    ],
)
def test_config_errors_name_the_problem(values, needle):
    with pytest.raises(ItercompError, match=needle):
        IterateConfig(**values)


# ---- tiny end-to-end runs ---------------------------------------------------------------------------------------


def _tiny_base(folder: Path) -> Path:
    """A tiny random ShapesDiTPipeline saved like the shipped base model (weights perturbed from their zero init,
    so images depend on the prompt)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from itercomp.models.dit import CompositionDiT
    from itercomp.models.language import LanguageModelConfig, build_language_model, build_tokenizer
    from itercomp.models.pipeline import ShapesDiTPipeline

    tokenizer = build_tokenizer()
    lm = build_language_model(
        len(tokenizer), LanguageModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    )
    torch.manual_seed(0)
    dit = CompositionDiT(hidden_size=32, num_heads=2, text_dim=32, num_layers=2, conv_channels=(8, 16))
    for p in dit.parameters():
        p.data.normal_(0, 0.05)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    ShapesDiTPipeline(tokenizer=tokenizer, text_encoder=lm, transformer=dit, scheduler=scheduler).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A gallery YAML (the tiny base model + the procedural members) and tiny starting reward models."""
    from reward_models.model import RewardModel

    root = tmp_path_factory.mktemp("world")
    base = _tiny_base(root / "base")
    gallery = {
        "name": "tiny",
        "members": [
            {"name": "base", "type": "diffusers", "model": str(base), "batch_size": 32,
             "pipeline": "itercomp.models.pipeline.ShapesDiTPipeline",
             "call": {"num_inference_steps": 2, "guidance_scale": 1.0}},
            {"name": "layout_planner", "type": "layout_planner"},
            {"name": "bag_of_words", "type": "bag_of_words"},
            {"name": "colour_leak", "type": "colour_leak"},
        ],
    }  # fmt: skip
    (root / "gallery.yaml").write_text(yaml.safe_dump(gallery))
    for aspect in REWARD_ASPECTS:
        torch.manual_seed(0)
        model = RewardModel.for_shapes_world(aspect, width=32, image_layers=1, fusion_layers=1, heads=2)
        model.save_pretrained(root / "rewards" / aspect)
    return root


def _config(world: Path, out: Path, **overrides) -> IterateConfig:
    settings = dict(
        rounds=2, output_dir=str(out), gallery=str(world / "gallery.yaml"), reward_init=str(world / "rewards"),
        prompts_per_aspect=2, val_prompts_per_aspect=1, simulated_annotators=2, threads=1,
        rewards={"epochs": 1, "batch_rankings": 4}, finetune={"max_steps": 1}, finetune_prompts_per_aspect=2, eval_prompts_per_aspect=2,
        grid_prompts=2,
    )  # fmt: skip
    return IterateConfig(**{**settings, **overrides})


def fake_finetune(pipe, reward_fn, prompts, config, accelerator=None, regulariser_data=None):
    """Moves the denoiser's weights a little (a different model each round) and saves it as the real one does,
    after checking the reward function it was given scores every aspect differentiably."""
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    rewards = reward_fn(images, prompts[:2])
    assert sorted(rewards) == sorted(REWARD_ASPECTS) and all(r.shape == (2,) for r in rewards.values())
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator))
    out = Path(config.output_dir)
    pipe.save_pretrained(out / "pipeline")
    metrics = {"steps": config.max_steps, "sampling_steps": config.num_inference_steps, "history": [{"loss": 0.5}],
               "eval": {"before": {"a": 0.0}, "after": {}}}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics))
    return {**metrics, "seconds_this_run": torch.tensor(0.25)}


def killed_in_round_2(pipe, reward_fn, prompts, config, **kwargs):
    if Path(config.output_dir).parent.name == "round_2":
        raise RuntimeError("killed during fine-tuning")
    return fake_finetune(pipe, reward_fn, prompts, config, **kwargs)


def _iterate(config, finetune_fn=fake_finetune, **kwargs):
    from itercomp.loop.run import iterate

    return iterate(config, finetune_fn=finetune_fn, feedback_config_cls=FakeFeedbackConfig, log=lambda _: None,
                   **kwargs)  # fmt: skip


def _markers(layout: RunLayout, k: int) -> dict:
    stages = ("eval",) if k == 0 else STAGES
    return {
        s: (layout.stage(k, s) / "done.json").read_text()
        for s in stages
        if (layout.stage(k, s) / "done.json").is_file()
    }


def test_run_killed_in_round_2_resumes_to_a_complete_report(world, tmp_path):
    out = tmp_path / "run"
    layout = RunLayout(out)
    with pytest.raises(RuntimeError, match="killed"):
        _iterate(_config(world, out), finetune_fn=killed_in_round_2)
    partial = json.loads(layout.report.read_text())
    assert not partial["complete"] and partial["rounds_complete"] == 1
    before = {k: _markers(layout, k) for k in (0, 1, 2)}
    assert set(before[2]) == {"gallery", "rankings", "rewards"}  # finished before the kill

    with pytest.raises(ItercompError, match="pass --resume"):
        _iterate(_config(world, out))
    with pytest.raises(ItercompError, match="prompts_per_aspect: 2 -> 3"):
        _iterate(_config(world, out, prompts_per_aspect=3), resume=True)
    report = _iterate(_config(world, out), resume=True)

    # Finished stages were not redone: their markers are byte-identical (they hold the finishing time).
    for k in (0, 1, 2):
        after = _markers(layout, k)
        assert all(after[s] == before[k][s] for s in before[k]), k
    assert report["complete"] and report["rounds_complete"] == 2
    assert json.loads(layout.report.read_text()) == json.loads(json.dumps(report))

    # The run layout of docs/design.md §5.
    for k in (1, 2):
        r = layout.round_dir(k)
        for path in ("gallery/manifest.jsonl", "rankings/annotations.sqlite", "rankings/export/rankings.jsonl",
                     "rankings/rankings.jsonl", "model/pipeline/model_index.json", "eval/rows.jsonl",
                     "eval/eval.json", "expand/scores.json", "expand/rankings.jsonl"):  # fmt: skip
            assert (r / path).is_file(), (k, path)
        for aspect in REWARD_ASPECTS:
            assert (r / "rewards" / aspect / "config.json").is_file()
    assert (out / "scores.png").is_file() and (out / "config.yaml").is_file()
    assert sorted(p.name for p in (out / "grids").iterdir()) == sorted(f"{a}.png" for a in ASPECTS)

    # report.json: per round, per aspect.
    assert [e["round"] for e in report["rounds"]] == [0, 1, 2]
    for entry in report["rounds"]:
        assert set(entry["test"]) == set(ASPECTS)
        assert all(0 <= entry["test"][a]["accuracy"] <= 1 and entry["test"][a]["n"] == 2 for a in ASPECTS)
        if entry["round"]:
            assert set(entry["timings"]) == set(STAGES)
            assert entry["finetune"]["steps"] == 1 and entry["finetune"]["final_loss"] == 0.5
            assert entry["finetune"]["sampling_steps"] == 2  # the base member's `call`, not FeedbackConfig's 40
            assert entry["finetune"]["seconds_this_run"] == 0.25
            for aspect in REWARD_ASPECTS:
                rewards = entry["rewards"][aspect]
                assert 0 <= rewards["pair_accuracy"] <= 1 and rewards["held_out_rankings"] >= 1
                assert "pair_accuracy_before" in rewards and rewards["train"]["train_rankings"] >= 1
    assert len(report["per_aspect"]["complex"]["accuracy"]) == 3

    # Round 2 ranked its new prompts with a gallery that holds round 1's model, and trained on round 1's grown
    # rankings (with round 1's model's images inserted by round 1's reward models) plus its own.
    manifest = [json.loads(line) for line in (layout.stage(2, "gallery") / "manifest.jsonl").open()]
    assert {"base", "base_r1", "layout_planner"} <= {m["generator"] for m in manifest}
    training = [json.loads(line) for line in (layout.stage(2, "rankings") / "rankings.jsonl").open()]
    carried = [r for r in training if r["annotator"].startswith("reward_model:round_1/")]
    fresh = [r for r in training if r["annotator"].startswith("sim-")]
    assert carried and fresh and len(carried) + len(fresh) == len(training)
    assert all(r["round"] == 2 and any(c["generator"] == "base_r1" for c in r["candidates"]) for r in carried)
    for row in training:  # relative paths that resolve from the file's folder
        assert all((layout.stage(2, "rankings") / c["path"]).is_file() for c in row["candidates"])

    # Every candidate of every expanded ranking was scored once, and the humans' order survives insertion.
    scores = json.loads((layout.stage(2, "expand") / "scores.json").read_text())
    grown = [json.loads(line) for line in (layout.stage(2, "expand") / "rankings.jsonl").open()]
    assert len(grown) == len(training)
    for old, new in zip(training, grown):  # one grown ranking per ranking, in the same order
        assert new["round"] == 3 and new["annotator"] == f"reward_model:round_2/{old['aspect']}"
        assert all(c["image_id"] in scores[old["aspect"]] for c in new["candidates"])
        assert [i for i in new["order"] if i in set(old["order"])] == old["order"]
        assert {c["generator"] for c in new["candidates"]} - {c["generator"] for c in old["candidates"]} == {"base_r2"}


@pytest.mark.parametrize("reward,mode", [("learned", "refl"), ("oracle", "dpo"), ("oracle", "select")])
def test_one_round_with_the_real_finetune(world, tmp_path, reward, mode):
    """ReFL on the reward models, DPO on the oracle with the round's rankings as preference pairs, and select on
    the oracle plus the rankings' winners; the report puts the learned rewards beside the oracle's accuracy."""
    from itercomp.loop.report import format_table
    from itercomp.loop.run import iterate
    from itercomp.models.pipeline import ShapesDiTPipeline

    out = tmp_path / "real"
    finetune = {"max_steps": 1, "batch_size": 2, "eval_prompts": 2, "cpu": True, "grad_mode": mode}
    if mode == "select":
        finetune["select"] = {"winners": "round", "samples_per_prompt": 2}
    config = _config(world, out, rounds=1, reward=reward, finetune=finetune)
    report = iterate(config, log=lambda _: None)
    finetune = report["rounds"][1]["finetune"]
    assert report["complete"] and finetune["steps"] == 1 and set(finetune["reward_after"]) == set(REWARD_ASPECTS)
    assert all(set(r["learned_rewards"]) == set(REWARD_ASPECTS) for r in report["rounds"])
    assert all(len(report["per_aspect"][a]["learned_reward"]) == 2 for a in REWARD_ASPECTS)
    table = format_table(report).splitlines()
    assert table[3].startswith("gain, round 1 - round 0") and "mean of 3" in table[4]
    assert "reward models' mean score" in table[5]
    assert set(report["gain"]) == {"from_round", "to_round", *ASPECTS, "mean of 3"}
    used = json.loads((RunLayout(out).stage(1, "model") / "metrics.json").read_text())["config"]
    rankings = str(RunLayout(out).stage(1, "rankings") / "rankings.jsonl")
    if mode == "dpo":
        assert used["dpo"]["preference_pairs"] == rankings
    if mode == "select":
        assert used["select"]["winners"] == rankings
    tuned = ShapesDiTPipeline.from_pretrained(RunLayout(out).pipeline(1)).transformer.state_dict()
    base = ShapesDiTPipeline.from_pretrained(world / "base").transformer.state_dict()
    assert any(not torch.equal(tuned[name], base[name]) for name in base)


def test_human_mode_stops_with_the_serve_command_and_picks_up(world, tmp_path):
    from annotation_app.simulate import SimulationConfig, simulate
    from annotation_app.store import Store
    from itercomp.loop.human import WaitingForRankings

    out = tmp_path / "human"
    config = _config(world, out, rounds=1, annotators="human", overlap=1)
    with pytest.raises(WaitingForRankings) as waiting:
        _iterate(config)
    message = str(waiting.value)
    db = str(RunLayout(out).shared_db)
    assert f"itercomp annotate serve --db {db} --round 1 --overlap 1" in message
    assert "0 so far" in message and f"itercomp iterate --output-dir {out} --resume" in message
    assert not (RunLayout(out).stage(1, "rankings") / "done.json").exists()

    # People rank (stand-ins here, through the same store calls as the web app); the next invocation goes on.
    simulate(Store(db), SimulationConfig(annotators=1, overlap=1, round=1), progress=False)
    report = _iterate(config, resume=True)
    assert report["complete"]
    rankings = json.loads((RunLayout(out).stage(1, "rankings") / "done.json").read_text())["summary"]
    assert rankings["annotators"] == "human" and rankings["fresh_rankings"] == rankings["tasks"] == 9


def test_waiting_for_human_rankings_polls_until_the_target_or_gives_up():
    from itercomp.loop.human import WaitingForRankings, needed, wait_for_rankings

    counts = iter([1, 2, 4, 5])
    progress = {"round": 1, "tasks": 5, "overlap": 1, "target": 5}
    poll = lambda: {**progress, "towards_target": next(counts)}  # noqa: E731
    got = wait_for_rankings(poll, 4, minutes=1.0, message=lambda p: "", poll_seconds=0.0)
    assert got["towards_target"] == 4
    with pytest.raises(WaitingForRankings, match="only 0"):
        wait_for_rankings(lambda: {**progress, "towards_target": 0}, 4, 1e-4, lambda p: "only 0", poll_seconds=0.01)
    assert needed({**progress, "towards_target": 0}, None) == 5
    with pytest.raises(ItercompError, match="lower it or raise --overlap"):
        needed({**progress, "towards_target": 0}, 6)


def test_cli_refuses_an_existing_run_without_resume(tmp_path, capsys):
    from itercomp.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("rounds: 1\n")
    assert main(["iterate", "--output-dir", str(tmp_path / "run"), "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pass --resume" in err and len(err.splitlines()) == 1
    assert main(["iterate", "--output-dir", str(tmp_path / "x"), "--rewards", "epochs"]) == 2
    assert "FIELD=VALUE" in capsys.readouterr().err


def test_format_table_means_the_three_reward_aspects_and_lists_the_learned_rewards():
    from itercomp.loop.report import format_table

    test = {"attribute_binding": 0.3, "spatial_relationship": 0.0, "non_spatial_relationship": 0.6, "complex": 0.9}
    rounds = [
        {"round": 0, "test": {a: {"accuracy": v} for a, v in test.items()}, "learned_rewards": None},
        {"round": 1, "test": None},
        {
            "round": 2,
            "test": {a: {"accuracy": 0.5} for a in test},
            "learned_rewards": dict.fromkeys(REWARD_ASPECTS, -0.25),
        },
    ]
    lines = format_table({"rounds": rounds, "measure": "accuracy"}).splitlines()
    assert lines[0].split()[-3:] == ["mean", "of", "3"]
    assert lines[1].split() == ["0", "0.300", "0.000", "0.600", "0.900", "0.300"]  # complex left out of the mean
    assert lines[2].split() == ["2", "0.500", "0.500", "0.500", "0.500", "0.500"]
    assert lines[3].startswith("reward models' mean score") and lines[4].split() == [
        "2",
        "-0.250",
        "-0.250",
        "-0.250",
        "-",
    ]
    # An evaluator without verdicts (t2i_compbench) is tabled by its mean score.
    scored = [{"round": 0, "test": {a: {"accuracy": None, "mean_score": 0.25} for a in test}}]
    assert format_table({"rounds": scored, "measure": "mean_score"}).splitlines()[1].split()[-1] == "0.250"
    assert len(lines) == 5


def _cli_run(args: list[str], cwd: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "itercomp.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900, cwd=cwd)  # fmt: skip


def test_two_processes_split_every_stage_and_agree_with_one(world, tmp_path):
    """`itercomp iterate --num-processes 2` reruns itself under `accelerate launch` (gloo on CPUs): the gallery
    is split across both processes, fine-tuning keeps both ranks' weights equal, and what does not depend on the
    number of processes (the base model's evaluation, every gallery image) equals a one-process run's."""
    from PIL import Image

    settings = dict(
        rounds=1, gallery=str(world / "gallery.yaml"), reward_init=str(world / "rewards"), threads=1,
        prompts_per_aspect=2, val_prompts_per_aspect=1, simulated_annotators=2, finetune_prompts_per_aspect=2,
        eval_prompts_per_aspect=2, grid_prompts=1, rewards={"epochs": 1, "batch_rankings": 4},
        finetune={"max_steps": 1, "batch_size": 2, "eval_prompts": 2, "checkpoint_every": 1},
    )  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        done = _cli_run(["iterate", "--config", str(tmp_path / "config.yaml"), "--output-dir", str(out),
                         "--num-processes", str(n)], tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        runs[n] = RunLayout(out)
    one, two = runs[1], runs[2]
    assert json.loads(two.report.read_text())["complete"]
    gallery = json.loads((two.stage(1, "gallery") / "run.json").read_text())
    assert gallery["world_size"] == 2 and all(n > 0 for n in gallery["rendered_per_process"])
    metrics = json.loads((two.stage(1, "model") / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and [p["rank"] for p in metrics["processes"]] == [0, 1]
    assert metrics["processes"][0]["weights"] == metrics["processes"][1]["weights"]  # gradients synchronised
    assert (two.pipeline(1) / "model_index.json").is_file()

    def pixels(layout, folder):
        return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(folder(layout).glob("*.png"))}

    for folder in (lambda r: r.stage(0, "eval") / "images", lambda r: r.stage(1, "gallery") / "images"):
        a, b = pixels(one, folder), pixels(two, folder)
        assert a and a.keys() == b.keys()
        assert max(int(np.abs(a[k] - b[k]).max()) for k in a) <= 2  # batches of other sizes round differently
    zero = [json.loads(line)["score"] for line in (one.stage(0, "eval") / "rows.jsonl").open()]
    assert np.allclose(zero, [json.loads(line)["score"] for line in (two.stage(0, "eval") / "rows.jsonl").open()],
                       atol=0.05)  # fmt: skip


def test_expand_by_hand_grows_the_rankings_as_the_loop_does(world, tmp_path):
    """`itercomp expand` with round 1's model, rankings and reward models reproduces the loop's expansion."""
    from itercomp.cli import main

    out = tmp_path / "run"
    _iterate(_config(world, out, rounds=1))
    layout = RunLayout(out)
    by_hand = tmp_path / "expand"
    args = ["expand", "--gallery", str(world / "gallery.yaml"), "--member", "base", "--model", str(layout.pipeline(1)),
            "--name", "base_r1", "--rankings", str(layout.stage(1, "rankings") / "rankings.jsonl"),
            "--rewards", str(layout.stage(1, "rewards")), "--output-dir", str(by_hand), "--round", "2",
            "--annotator", "reward_model:round_1"]  # fmt: skip
    assert main(args) == 0
    loop = [json.loads(line) for line in (layout.stage(1, "expand") / "rankings.jsonl").open()]
    hand = [json.loads(line) for line in (by_hand / "rankings.jsonl").open()]
    assert [r["order"] for r in hand] == [r["order"] for r in loop]
    assert [r["annotator"] for r in hand] == [r["annotator"] for r in loop] and all(r["round"] == 2 for r in hand)
    assert main([*args[:-4], "--rewards", str(tmp_path / "none"), "--output-dir", str(by_hand)]) == 2


def test_paired_gain_pairs_prompts_and_seeds_and_means_the_three_aspects():
    from itercomp.loop.report import format_table, paired_gain

    def rows(correct: dict) -> list[dict]:
        return [{"prompt_id": f"{a}{i}", "seed": s, "aspect": a, "correct": c, "score": float(c)}
                for a, values in correct.items() for i, s, c in values]  # fmt: skip

    before = rows({a: [(0, 0, False), (0, 1, False), (1, 0, True), (1, 1, False)] for a in ASPECTS})
    after = rows({a: [(0, 1, True), (0, 0, False), (1, 0, True), (1, 1, True), (2, 0, True)] for a in ASPECTS})
    gain = paired_gain(before, after, "accuracy")
    # four pairs per aspect (the unpaired (2, 0) is left out): differences 0, 1, 0, 1
    assert gain["spatial_relationship"] == {"gain": 0.5, "se": pytest.approx(np.std([0, 1, 0, 1], ddof=1) / 2), "n": 4}
    mean = gain["mean of 3"]
    assert mean["gain"] == 0.5 and mean["se"] == pytest.approx(np.sqrt(3 * (np.std([0, 1, 0, 1], ddof=1) / 2) ** 2) / 3)
    report = {"rounds": [], "measure": "accuracy", "gain": {"from_round": 0, "to_round": 3, **gain}}
    lines = format_table(report).splitlines()
    assert lines[1].startswith("gain, round 3 - round 0") and "mean of 3 +0.500 +- 0.167" in lines[2]
