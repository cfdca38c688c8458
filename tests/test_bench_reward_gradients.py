"""bench/reward_gradients.py's harness: it must register an improvement when a gradient points the right way, and
its best-of-N pick must follow the reward model."""

from types import SimpleNamespace

import numpy as np
import torch
from bench_helpers import load_bench

from itercomp.world import render

PROMPTS = ["a red circle and a blue square", "a green triangle to the left of a white cross"]


def test_ascent_toward_ground_truth_turns_blank_images_correct():
    bench = load_bench("reward_gradients")
    targets = bench.to_unit(np.stack([render(p, seed=k) for k, p in enumerate(PROMPTS)]))
    blank = torch.zeros_like(targets)
    assert bench.oracle(blank, PROMPTS)["accuracy"] == 0.0

    rows = bench.ascend(blank, PROMPTS, lambda y: -(y - targets).square().flatten(1).mean(1), 60, 0.05, [1, 60])
    assert [r["step"] for r in rows] == [1, 60]
    assert rows[0]["accuracy"] == 0.0 and rows[-1]["accuracy"] == 1.0
    assert rows[-1]["objective"] > rows[0]["objective"]


def test_best_of_n_takes_the_reward_models_pick():
    bench = load_bench("reward_gradients")

    class Pipe:  # seed 0 draws nothing, seed 1 the ground truth
        def __call__(self, prompts, generator, **kwargs):
            seed = generator[0].initial_seed() // 100003
            images = [
                render(p, seed=k) if seed == 1 else np.zeros((32, 32, 3), np.uint8) for k, p in enumerate(prompts)
            ]
            return SimpleNamespace(images=np.stack(images))

    class Brightness:  # a reward model that prefers brighter images
        def score(self, images, prompts):
            return images.mean((1, 2, 3))

    result = bench.best_of_n(Pipe(), Brightness(), PROMPTS, n=2, steps=1, guidance=1.0)
    assert result == {"n": 2, "first_seed": 0.0, "mean_seed": 0.5, "reward_pick": 1.0, "oracle_best": 1.0}


def test_smoothing_off_returns_the_objective_itself():
    bench = load_bench("reward_gradients")

    def objective(y):
        return y.mean((1, 2, 3))

    assert bench.smoothed(objective, 0.0, 1, 0, torch.Generator()) is objective
    smooth = bench.smoothed(objective, 0.1, 4, 1, torch.Generator().manual_seed(0))
    x = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(smooth(x), objective(x), atol=0.02)
