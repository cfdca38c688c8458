"""Benchmark: can the reward models learn to rank the base model's *own* samples, and what do their labels allow?

python bench/reward_self_pairs.py --train-prompts 200 --seeds 6 --test-prompts 60 --temperatures 0.05 0

Reward feedback has to work among one model's samples of one prompt, which differ in details (a circle drawn as a
blob, a hollow fill drawn solid), not between gallery members that differ grossly. This measures whether the
reward models can be taught those details from rankings of exactly such samples:

1. **data**: the base model samples `--train-prompts` train (and `--val-prompts` val) prompts per aspect with
   `--seeds` seeds each, and `--test-prompts` test prompts with `--test-seeds` seeds; the oracle scores every image.
   Cached under `--work` (a rerun skips what is there).
2. **rankings**: per prompt, the seeds ranked by a simulated annotator at each `--temperatures` value (Plackett-Luce
   on the oracle's soft score, as the loop's annotators; 0 = the oracle's exact order). `label_accuracy` is the
   share of the ranking's pairs (with a score gap) that agree with the oracle: how right the labels are.
3. **refine**: the shipped reward models are refined on each set of rankings (`--epochs`, `--lr`).
4. **evaluate** on the test seeds, for the shipped and each refined model: `pair_accuracy` (the reward model
   orders two seeds of one prompt as the oracle's soft score does), and best-of-N: the oracle's binary accuracy of
   the reward model's pick, of the first seed, and of the best pick.

Writes JSON and prints a table. Measured numbers are in docs/iterate.md ("What limits the loop").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from itercomp.io import read_jsonl, save_png, write_json, write_jsonl
from itercomp.models.pretrain import load_member
from itercomp.rankings import plackett_luce
from itercomp.records import SIMULATED, Candidate, Ranking, image_id
from itercomp.world import REWARD_ASPECTS, generate_prompts, prompt_id, score
from reward_models.config import RewardTrainConfig
from reward_models.ensemble import RewardEnsemble
from reward_models.training import train

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED_OFFSET = 10  # train/val samples use noise seeds 10, 11, ...; test samples 0, 1, ... (as the evaluation)


def sample(pipe, prompts: list[str], seed: int, steps: int, guidance: float) -> np.ndarray:
    """uint8 images, prompt k with generator seed * 100003 + k (the convention of itercomp.models.evaluate)."""
    generators = [torch.Generator().manual_seed(seed * 100003 + k) for k in range(len(prompts))]
    return pipe(
        prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators, output_type="np"
    ).images


def pair_agreement(oracle_scores: np.ndarray, rewards: np.ndarray) -> tuple[int, int]:
    """(agreeing, total) over pairs of seeds of one prompt with different oracle scores; arrays are seeds x prompts."""
    agree = total = 0
    seeds = oracle_scores.shape[0]
    for i in range(seeds):
        for j in range(i + 1, seeds):
            differ = oracle_scores[i] != oracle_scores[j]
            total += int(differ.sum())
            agree += int(((oracle_scores[i] > oracle_scores[j]) == (rewards[i] > rewards[j]))[differ].sum())
    return agree, total


def best_of(correct: np.ndarray, rewards: np.ndarray) -> dict[str, float]:
    """Oracle accuracy of the reward model's pick, the first seed and the best pick; arrays are seeds x prompts."""
    pick = rewards.argmax(0)
    return {
        "reward_pick": float(correct[pick, np.arange(correct.shape[1])].mean()),
        "first_seed": float(correct[0].mean()),
        "oracle_best": float(correct.max(0).mean()),
    }


def label_accuracy(order: list[str], oracle_scores: dict[str, float]) -> tuple[int, int]:
    """(agreeing, total) pairs of a ranking (best first) against the oracle's scores, pairs with equal scores skipped."""
    agree = total = 0
    for i, better in enumerate(order):
        for worse in order[i + 1 :]:
            if oracle_scores[better] != oracle_scores[worse]:
                total += 1
                agree += oracle_scores[better] > oracle_scores[worse]
    return agree, total


def render_data(pipe, args, work: Path) -> list[dict]:
    """Train/val samples as PNGs with their oracle scores (samples.jsonl); cached."""
    index = work / "samples.jsonl"
    if index.is_file():
        return read_jsonl(index)
    rows = []
    for aspect in REWARD_ASPECTS:
        prompts = generate_prompts(aspect, "train", args.train_prompts, seed=7)
        prompts += generate_prompts(aspect, "val", args.val_prompts, seed=7)
        for start in tqdm(range(0, len(prompts), 50), desc=f"sample {aspect}", unit="batch"):
            chunk = prompts[start : start + 50]
            for s in range(args.seeds):
                images = sample(pipe, chunk, TRAIN_SEED_OFFSET + s, args.sample_steps, args.guidance)
                for prompt, image in zip(chunk, images):
                    iid = image_id(prompt_id(prompt), "base", s)
                    path = f"images/{aspect}/{iid}.png"
                    sha = save_png(work / path, image)
                    rows.append({"aspect": aspect, "prompt": prompt, "seed": s, "image_id": iid, "path": path,
                                 "sha256": sha, "score": score(image, prompt).score})  # fmt: skip
    write_jsonl(index, rows)
    return rows


def test_data(pipe, args, work: Path) -> dict[str, dict]:
    """Per aspect: test prompts, images (seeds x prompts x H x W x 3), oracle soft scores and verdicts; cached."""
    path = work / "test.npz"
    if not path.is_file():
        arrays = {}
        for aspect in REWARD_ASPECTS:
            prompts = generate_prompts(aspect, "test", args.test_prompts)
            arrays[aspect] = np.stack(
                [sample(pipe, prompts, s, args.sample_steps, args.guidance) for s in range(args.test_seeds)]
            )
            arrays[f"{aspect}/prompts"] = np.array(prompts)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
    arrays = np.load(path)
    data = {}
    for aspect in REWARD_ASPECTS:
        images, prompts = arrays[aspect], [str(p) for p in arrays[f"{aspect}/prompts"]]
        verdicts = [[score(images[s, k], p) for k, p in enumerate(prompts)] for s in range(len(images))]
        data[aspect] = {
            "images": images,
            "prompts": prompts,
            "scores": np.array([[v.score for v in row] for row in verdicts]),
            "correct": np.array([[v.correct for v in row] for row in verdicts], dtype=float),
        }
    return data


def write_rankings(samples: list[dict], temperature: float, path: Path) -> dict[str, float]:
    """One simulated ranking per (aspect, prompt) of its seeds; returns label accuracy per aspect."""
    rng = np.random.default_rng(0)
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in samples:
        groups.setdefault((row["aspect"], row["prompt"]), []).append(row)
    rankings, counts = [], {a: [0, 0] for a in REWARD_ASPECTS}
    for (aspect, prompt), rows in groups.items():
        candidates = [Candidate(r["image_id"], "base", r["seed"], r["path"], r["sha256"]) for r in rows]
        scores = np.array([r["score"] for r in rows])
        order = [rows[i]["image_id"] for i in plackett_luce(scores, temperature, rng)]
        rankings.append(Ranking(prompt_id(prompt), prompt, aspect, candidates, order, SIMULATED).to_dict())
        agree, total = label_accuracy(order, {r["image_id"]: r["score"] for r in rows})
        counts[aspect][0] += agree
        counts[aspect][1] += total
    write_jsonl(path, rankings)
    return {a: round(agree / max(total, 1), 3) for a, (agree, total) in counts.items()}


@torch.no_grad()
def evaluate(folder: str, data: dict[str, dict]) -> dict[str, dict]:
    ensemble = RewardEnsemble.from_pretrained(folder).eval()
    result = {}
    for aspect, d in data.items():
        model = ensemble.models[aspect]
        rewards = np.stack(
            [
                model.score(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, d["prompts"]).numpy()
                for x in d["images"]
            ]
        )
        agree, total = pair_agreement(d["scores"], rewards)
        result[aspect] = {"pair_accuracy": round(agree / max(total, 1), 3), "pairs": total,
                          **{k: round(v, 3) for k, v in best_of(d["correct"], rewards).items()}}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(ROOT / "itercomp/weights/base"), help="the generator (pipeline folder)")
    parser.add_argument("--rewards", default=str(ROOT / "itercomp/weights/rewards"), help="reward models to refine")
    parser.add_argument("--train-prompts", type=int, default=200, help="train prompts per aspect")
    parser.add_argument("--val-prompts", type=int, default=30, help="val prompts per aspect (the trainer's val split)")
    parser.add_argument("--seeds", type=int, default=6, help="samples per train/val prompt (candidates per ranking)")
    parser.add_argument("--test-prompts", type=int, default=60, help="test prompts per aspect")
    parser.add_argument("--test-seeds", type=int, default=4, help="samples per test prompt (N of best-of-N)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.05, 0.0],
                        help="simulated annotators' Plackett-Luce temperatures (the loop's default: 0.05)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=8, help="refinement epochs (the trainer keeps the best val)")
    parser.add_argument("--lr", type=float, default=5e-4, help="refinement learning rate")
    parser.add_argument("--sample-steps", type=int, default=20, help="sampler steps of the base model")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance of the base model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default=str(ROOT / "runs/bench-reward-self-pairs"), help="samples and models")
    parser.add_argument("--out", default=str(ROOT / "bench/results/reward_self_pairs.json"))
    args = parser.parse_args()
    if args.seeds < 2 or args.test_seeds < 2:
        parser.error("--seeds and --test-seeds must be >= 2: a ranking and a pick need two samples")
    if args.threads:
        torch.set_num_threads(args.threads)

    started, work = time.time(), Path(args.work)
    pipe = load_member(Path(args.base))
    pipe.set_progress_bar_config(disable=True)
    samples = render_data(pipe, args, work)
    data = test_data(pipe, args, work)
    results = {"shipped": {"label_accuracy": None, "test": evaluate(args.rewards, data)}}
    for temperature in args.temperatures:
        name = f"temperature_{temperature:g}"
        labels = write_rankings(samples, temperature, work / f"rankings_{name}.jsonl")
        config = RewardTrainConfig(rankings=str(work / f"rankings_{name}.jsonl"), output_dir=str(work / name),
                                   init_from=args.rewards, epochs=args.epochs, learning_rate=args.lr,
                                   threads=args.threads, cpu=True)  # fmt: skip
        train(config)
        results[name] = {"label_accuracy": labels, "test": evaluate(str(work / name), data)}

    print(
        f"\n{'reward models':24s} {'aspect':26s} {'labels':>7s} {'pairs':>6s} {'pick':>6s} {'first':>6s} {'best':>6s}"
    )
    for name, r in results.items():
        for aspect, t in r["test"].items():
            labels = f"{r['label_accuracy'][aspect]:.3f}" if r["label_accuracy"] else "-"
            print(f"{name:24s} {aspect:26s} {labels:>7s} {t['pair_accuracy']:6.3f} {t['reward_pick']:6.3f} "
                  f"{t['first_seed']:6.3f} {t['oracle_best']:6.3f}")  # fmt: skip
    write_json(Path(args.out), {"settings": vars(args), "seconds": round(time.time() - started, 1), "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
