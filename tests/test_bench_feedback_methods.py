"""bench/feedback_methods.py's harness: equal sampled images per mode, paired differences with standard errors,
and one tiny end-to-end run per black-box mode and of the supervised reference on a tiny base model."""

from __future__ import annotations

import itertools
import json
import types

import pytest
import torch
from bench_helpers import load_bench

from itercomp.world.vocab import REWARD_ASPECTS

bench = load_bench("feedback_methods")


def test_every_mode_samples_the_same_number_of_images():
    steps = {m: round(1600 / bench.images_per_step({**bench.SHARED, **s})) for m, s in bench.MODES.items()}
    for mode, settings in bench.MODES.items():
        assert steps[mode] * bench.images_per_step(settings) == pytest.approx(1600, rel=0.05)


def test_set_changes_one_key_of_a_section_over_the_modes_settings():
    args = types.SimpleNamespace(lr=3e-4, overrides=bench.parse_overrides(["awm.negative_weight=0", "ema_decay=0.9"]))
    settings = bench.mode_settings("awm", args)
    assert settings["awm"] == {**bench.MODES["awm"]["awm"], "negative_weight": "0"}
    assert settings["learning_rate"] == 3e-4 and settings["ema_decay"] == "0.9"
    from itercomp.finetune import FeedbackRunConfig

    config = bench.config_from_dict(FeedbackRunConfig, {**settings, "grad_mode": "awm"})
    assert config.awm.negative_weight == 0.0 and config.awm.group_size == bench.MODES["awm"]["awm"]["group_size"]
    recorded = bench.recorded_settings(config, ["awm", "ema_decay", "learning_rate"], settings)
    assert recorded == {"awm": {**bench.MODES["awm"]["awm"], "negative_weight": 0.0}, "ema_decay": 0.9,
                        "learning_rate": 3e-4}  # fmt: skip


def test_paired_differences_and_their_standard_error():
    def rows(correct):
        return [{"aspect": a, "correct": c} for a in REWARD_ASPECTS for c in correct]

    result = bench.paired(rows([1, 1, 0, 0]), rows([0, 1, 0, 1]))
    for aspect in REWARD_ASPECTS:
        assert result[aspect]["accuracy"] == 0.5 and result[aspect]["base"] == 0.5
        assert result[aspect]["vs_base"] == 0.0
        assert result[aspect]["vs_base_se"] == pytest.approx((2 / 3) ** 0.5 / 2)  # diffs 1, 0, 0, -1
    assert bench.paired(rows([1, 1]), rows([0, 0]))["mean_vs_base"] == 1.0


def test_the_learned_rewards_share_of_the_oracles_gain_pairs_mode_and_budget():
    def row(mode, reward, minutes, gain):
        return {"mode": mode, "reward": reward, "minutes": minutes, "test": {"mean_vs_base": gain}}

    results = [row("dpo", "oracle", 10.0, 0.04), row("dpo", "learned", 10.0, 0.03), row("dpo", "oracle", 20.0, 0.05),
               row("awm", "oracle", 10.0, -0.01), row("awm", "learned", 10.0, 0.01), row("dpo", "learned", 20.0, 0.01)]  # fmt: skip
    shares = bench.oracle_shares(results)
    assert [(s["mode"], s["minutes"]) for s in shares] == [("dpo", 10.0), ("dpo", 20.0)]  # no share of a loss
    assert shares[0]["share"] == pytest.approx(0.75) and shares[1]["share"] == pytest.approx(0.2)


def test_tiny_run_of_each_black_box_mode_with_the_oracle(tmp_path, monkeypatch, shapes_pipe):
    shapes_pipe.save_pretrained(tmp_path / "base")
    monkeypatch.setattr(bench, "SHARED", {**bench.SHARED, "num_inference_steps": 3, "regulariser_samples": 8})
    small = {"select": {"samples_per_prompt": 2}, "dpo": {"samples_per_prompt": 2}, "grpo": {"group_size": 2}}
    tiny = {m: {**bench.MODES[m], "batch_size": 1, m: {**bench.MODES[m][m], **small[m]}} for m in small}
    tiny["grpo"].update(num_inference_steps=3, grpo={**tiny["grpo"]["grpo"], "train_steps": 1})
    monkeypatch.setattr(bench, "MODES", {**bench.MODES, **tiny})
    out = tmp_path / "r.json"
    argv = ["--modes", "select", "dpo", "grpo", "--rewards", "oracle", "--images", "4", "--eval-prompts", "1"]
    argv += ["--seeds", "0", "--base", str(tmp_path / "base"), "--threads", "1", "--work", str(tmp_path / "w")]
    summary = bench.main([*argv, "--supervised-images", "32", "--out", str(out)])
    assert [r["mode"] for r in summary["results"]] == ["select", "dpo", "grpo", "supervised"]
    assert all(r["steps"] == 2 and r["sampled_images"] == 4 for r in summary["results"][:3])
    assert summary["results"][3]["trained_images"] == 32 and summary["results"][3]["steps"] == 2
    assert json.loads(out.read_text())["results"][0]["test"]["attribute_binding"]["base"] in (0.0, 1.0)
    torch.set_num_threads(1)


def test_equal_minutes_curves_resume_their_checkpoints_and_a_stopped_bench_goes_on(tmp_path, monkeypatch, shapes_pipe):
    """--minutes M1 M2: each run stops after the step that passes its budget, the second point resumes the first's
    checkpoint; --resume keeps the rows and trains only the new points. The trainer's clock is a counter that
    makes every step last one second, so a point of k/60 minutes is k steps."""
    from itercomp.finetune import trainer

    clock = itertools.count()
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    shapes_pipe.save_pretrained(tmp_path / "base")
    monkeypatch.setattr(bench, "SHARED", {**bench.SHARED, "num_inference_steps": 3, "regulariser_samples": 8})
    tiny = {**bench.MODES["awm"], "batch_size": 1, "awm": {"group_size": 2, "sample_steps": 2}}
    monkeypatch.setattr(bench, "MODES", {**bench.MODES, "awm": tiny})
    argv = ["--modes", "awm", "--rewards", "oracle", "--eval-prompts", "1", "--seeds", "0"]
    argv += ["--base", str(tmp_path / "base"), "--threads", "1", "--work", str(tmp_path / "w")]
    argv += ["--out", str(tmp_path / "r.json")]
    second, two, three = 1 / 60, 2 / 60, 3 / 60
    summary = bench.main([*argv, "--minutes", str(second), str(two), "--supervised-minutes", "1e-5", "2e-5"])
    awm = [r for r in summary["results"] if r["mode"] == "awm"]
    supervised = [r for r in summary["results"] if r["mode"] == "supervised"]
    assert [(r["minutes"], r["steps"], r["sampled_images"]) for r in awm] == [(second, 1, 2), (two, 2, 4)]
    assert [r["train_seconds"] for r in awm] == [1.0, 2.0]
    assert [(r["minutes"], r["steps"]) for r in supervised] == [(1e-5, 1), (2e-5, 2)]
    assert "mean_vs_base_se" in awm[0]["test"]

    calls = []
    monkeypatch.setattr(bench, "run_supervised", lambda *a, **k: calls.append("supervised") or [])
    evaluate, evaluated = bench.evaluate, []  # the base's rows are read back from --work, not sampled again
    monkeypatch.setattr(bench, "evaluate", lambda *a: evaluated.append(1) or evaluate(*a))
    summary = bench.main([*argv, "--resume", "--minutes", str(second), str(two), str(three), "--supervised-minutes",
                          "1e-5"])  # fmt: skip
    awm = [r for r in summary["results"] if r["mode"] == "awm"]
    assert [(r["minutes"], r["steps"]) for r in awm] == [(second, 1), (two, 2), (three, 3)] and calls == []
    assert len(evaluated) == 1  # the new point only
    assert json.loads((tmp_path / "r.json").read_text())["results"] == summary["results"]
