"""bench/reward_self_pairs.py's measures: pair agreement, best-of-N picks and the labels' accuracy."""

import numpy as np
from bench_helpers import load_bench

from itercomp.io import read_jsonl
from itercomp.world import generate_prompts


def test_pair_agreement_counts_only_pairs_the_oracle_separates():
    bench = load_bench("reward_self_pairs")
    oracle = np.array([[0.9, 0.5], [0.4, 0.5], [0.1, 0.2]])  # seeds x prompts; prompt 1 has one tie (seeds 0, 1)
    assert bench.pair_agreement(oracle, oracle) == (5, 5)
    assert bench.pair_agreement(oracle, -oracle) == (0, 5)
    rewards = np.array([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.5]])  # prompt 0: 2 of 3 right; prompt 1: 1 of 2 right
    assert bench.pair_agreement(oracle, rewards) == (3, 5)


def test_best_of_picks_by_reward_and_reports_first_and_best():
    bench = load_bench("reward_self_pairs")
    correct = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    rewards = np.array([[0.0, 0.0, 5.0], [1.0, 1.0, 0.0]])
    assert bench.best_of(correct, rewards) == {"reward_pick": 1 / 3, "first_seed": 1 / 3, "oracle_best": 2 / 3}


def test_label_accuracy_of_a_ranking():
    bench = load_bench("reward_self_pairs")
    scores = {"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.1}
    assert bench.label_accuracy(["a", "b", "c", "d"], scores) == (5, 5)  # b-c is a tie: skipped
    assert bench.label_accuracy(["d", "a", "b", "c"], scores) == (2, 5)


def test_rankings_at_temperature_zero_follow_the_oracle(tmp_path):
    bench = load_bench("reward_self_pairs")
    prompt = "a red circle and a blue square"
    samples = [
        {
            "aspect": "attribute_binding",
            "prompt": prompt,
            "seed": s,
            "image_id": f"p-base-s{s}",
            "path": f"images/p-base-s{s}.png",
            "sha256": str(s),
            "score": score,
        }  # fmt: skip
        for s, score in enumerate([0.2, 0.9, 0.5])
    ]
    labels = bench.write_rankings(samples, 0.0, tmp_path / "rankings.jsonl")
    assert labels["attribute_binding"] == 1.0
    (ranking,) = read_jsonl(tmp_path / "rankings.jsonl")
    assert ranking["order"] == ["p-base-s1", "p-base-s2", "p-base-s0"]


def test_noisy_annotators_give_labels_near_chance(tmp_path):
    bench = load_bench("reward_self_pairs")
    rng = np.random.default_rng(1)  # not the bench's own stream (seed 0): its Gumbel draws would mirror these
    prompts = generate_prompts("spatial_relationship", "train", 100)
    samples = [
        {
            "aspect": "spatial_relationship",
            "prompt": prompts[k],
            "seed": s,
            "image_id": f"p{k}-s{s}",
            "path": f"images/p{k}-s{s}.png",
            "sha256": f"{k}-{s}",
            "score": float(rng.random()),
        }  # fmt: skip
        for k in range(100)
        for s in range(4)
    ]
    assert bench.write_rankings(samples, 0.0, tmp_path / "exact.jsonl")["spatial_relationship"] == 1.0
    assert 0.4 < bench.write_rankings(samples, 100.0, tmp_path / "noisy.jsonl")["spatial_relationship"] < 0.6
