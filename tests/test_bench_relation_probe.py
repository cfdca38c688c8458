"""bench/relation_probe.py's statistic: positive for the layout the relation asks for, negative for its mirror, zero
for a prompt-blind model; and the probe runs end to end on a tiny pipeline."""

import torch
from bench_helpers import load_bench

from itercomp.world import render


def test_relation_statistic_scores_the_named_side_positive():
    bench = load_bench("relation_probe")
    prompt = "a large red square to the left of a large blue square"
    left = bench.to_pixels([render(prompt, seed=s) for s in range(8)]).mean(0)
    right = left.flip(-1)  # the same scenes mirrored: red right of blue
    assert bench.relation_statistic(left - right, "to the left of", "red", "blue") > 0.5
    assert bench.relation_statistic(left - right, "to the right of", "red", "blue") < -0.5
    assert bench.relation_statistic(left - right, "above", "red", "blue") == 0  # symmetric vertically
    assert bench.relation_statistic(torch.zeros_like(left), "to the left of", "red", "blue") == 0


def test_probe_reports_a_prompt_blind_model_at_zero(tmp_path):
    from itercomp.models.language import LanguageModelConfig, build_language_model, build_tokenizer
    from itercomp.models.pretrain import PretrainConfig, build_dit, make_pipeline

    bench = load_bench("relation_probe")
    tokenizer = build_tokenizer()
    lm = build_language_model(len(tokenizer), LanguageModelConfig(hidden_size=32, num_layers=2, num_heads=2))
    cfg = PretrainConfig(hidden_size=32, num_heads=2, conv_channels=(8, 16), num_inference_steps=2)
    dit = build_dit(cfg, "pooled", lm)  # zero-initialised output: predicts the same x0 for every prompt
    pipe = make_pipeline(tokenizer, lm, dit, cfg)
    pipe.set_progress_bar_config(disable=True)
    result = bench.probe(pipe, ["a red circle above a blue square"], noises=2, renders=4)
    assert result["ideal_sensitivity"] > 0
    assert all(v == 0 for v in result["sensitivity"].values())


class _RenderingPipe:
    """Stands in for a pipeline: draws ground truth for each prompt, or for `fixed` whatever it is asked."""

    def __init__(self, fixed: str | None = None):
        self.fixed = fixed

    def __call__(self, prompts, generator, output_type):
        from types import SimpleNamespace

        import numpy as np

        images = [render(self.fixed or p, seed=g.initial_seed()) for p, g in zip(prompts, generator)]
        return SimpleNamespace(images=np.stack(images).astype(np.float32) / 255)


def test_flip_test_tells_a_model_that_reads_the_relation_from_one_that_ignores_it():
    bench = load_bench("relation_probe")
    prompt = "a large red square above a large blue circle"
    offset, same = bench.sampled_layout(_RenderingPipe(), prompt, seed=3)
    assert offset > 0 and same is False  # reads it: A above B, and below B for the flipped prompt
    offset, same = bench.sampled_layout(_RenderingPipe(fixed=prompt), prompt, seed=3)
    assert offset > 0 and same is True  # ignores it: the same layout for both prompts
