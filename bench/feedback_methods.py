"""Benchmark: which feedback method moves the base model, with the oracle (a perfect annotator) and with the
learned reward models, at equal CPU time (--minutes) or an equal number of sampled images (--images).

python bench/feedback_methods.py --minutes 30 --supervised-minutes 30 --eval-prompts 100 --seeds 0 1 2 3 \
    --out bench/results/feedback_methods_30min.json
python bench/feedback_methods.py --images 1600 --eval-prompts 100 --seeds 0 1 --out bench/results/feedback_methods.json

Each run fine-tunes the shipped base model (or --base) from the same start with one mode and one reward:

- refl      back-propagates the reward through one late sampling step (IterComp); learned rewards only
- select    trains the denoising loss on each prompt's best of samples_per_prompt samples (RAFT)
- dpo       Diffusion-DPO on each prompt's best vs worst sample (here without ranked pairs: online only)
- grpo      Flow-GRPO on every stochastic step, group-relative advantages
- awm       advantage-weighted matching: the denoising loss on a group's few-step samples, weighted by advantage

Beside them, `--supervised-images N ...` (or `--supervised-minutes M ...`) continues training on ground-truth
renders of train prompts with the plain denoising loss (batch 16, the same learning rate rule, EMA): continued
pretraining, the perfect-data reference that tells whether the base model can move at all with that budget.

With --minutes, every run trains until the step that passes M minutes (FeedbackConfig.max_minutes). Otherwise
steps are set so that every run samples about --images images for feedback (a step of select, dpo or grpo
samples batch_size x the mode's samples per prompt; one of refl samples batch_size). Each mode's learning rate, batch and
group come from MODES (the largest tried that did not break the model here; --lr overrides all). The fine-tuned
model and the base are sampled on the same test prompts and seeds, and scored by the oracle; differences are
paired per (prompt, seed), with standard errors. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from itercomp.io import write_json
from itercomp.world.vocab import REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]
# Each mode's settings: the largest learning rate tried that did not lower its own training reward or break the
# model (batch = prompts per step; a black-box step samples batch x group).
MODES = {
    "refl": {"learning_rate": 1e-4, "batch_size": 8},
    "select": {"learning_rate": 1e-4, "batch_size": 4, "select": {"samples_per_prompt": 4}},
    "dpo": {"learning_rate": 1e-4, "batch_size": 4, "dpo": {"samples_per_prompt": 4, "beta": 100.0}},
    "grpo": {
        "learning_rate": 1e-4, "batch_size": 4, "num_inference_steps": 10,
        "grpo": {"group_size": 8, "train_steps": 3, "noise_level": 0.7},
    },
    "awm": {"learning_rate": 1e-4, "batch_size": 4, "awm": {"group_size": 8, "sample_steps": 8}},
}  # fmt: skip
# The loop's fine-tuning defaults (itercomp.loop.config) that every mode shares.
SHARED = {"guidance_scale": 3.0, "window": {"grad_guidance_scale": 3.0}, "num_inference_steps": 20, "ema_decay": 0.99,
          "pretrain_loss_weight": 0.1, "regulariser_data": "shapes", "regulariser_samples": 512, "eval_prompts": 0,
          "checkpoint_every": 0, "cpu": True}  # fmt: skip


def images_per_step(settings: dict) -> int:
    """batch_size x the images a black-box mode samples per prompt (its section's samples_per_prompt or GRPO's
    group_size; 1 for refl)."""
    sizes = {
        **settings.get("select", {}),
        **settings.get("dpo", {}),
        **settings.get("grpo", {}),
        **settings.get("awm", {}),
    }
    return settings["batch_size"] * sizes.get("samples_per_prompt", sizes.get("group_size", 1))


def mean_and_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def paired(rows: list[dict], base: list[dict]) -> dict:
    """Per aspect: accuracy of both, and the paired difference (same prompt and seed) with its standard error."""
    out = {}
    for aspect in REWARD_ASPECTS:
        mine = [r for r in rows if r["aspect"] == aspect]
        theirs = [r for r in base if r["aspect"] == aspect]
        diffs = [float(a["correct"]) - float(b["correct"]) for a, b in zip(mine, theirs)]
        diff, se = mean_and_se(diffs)
        out[aspect] = {
            "accuracy": mean_and_se([float(r["correct"]) for r in mine])[0],
            "base": mean_and_se([float(r["correct"]) for r in theirs])[0],
            "vs_base": diff,
            "vs_base_se": se,
        }
    diffs = [out[a]["vs_base"] for a in REWARD_ASPECTS]
    out["mean_vs_base"] = sum(diffs) / len(diffs)
    return out


def evaluate(pipe, prompts, seeds) -> list[dict]:
    from itercomp.models.evaluate import evaluate_pipeline

    return evaluate_pipeline(pipe, prompts, seeds=seeds, num_inference_steps=20, guidance_scale=3.0)["rows"]


def run_one(mode: str, reward: str, args, base_rows, prompts) -> dict:
    from itercomp.commands.finetune import load_reward_fn
    from itercomp.finetune import FeedbackRunConfig, finetune
    from itercomp.finetune.job import load_pipeline
    from itercomp.world import generate_prompts

    settings = {**SHARED, **MODES[mode], **({"learning_rate": args.lr} if args.lr else {})}
    steps = 10**6 if args.minutes else max(1, round(args.images / images_per_step(settings)))
    out = Path(args.work) / f"{mode}-{reward}"
    config = FeedbackRunConfig(
        **settings, grad_mode=mode, max_steps=steps, max_minutes=args.minutes, output_dir=str(out), resume=False,
        threads=args.threads, reward=reward, rewards=args.rewards,
    )  # fmt: skip
    reward_fn = load_reward_fn(config)
    train = [p for a in REWARD_ASPECTS for p in generate_prompts(a, "train", 500)]
    pipe = load_pipeline(args.base)
    started = time.perf_counter()
    metrics = finetune(pipe, reward_fn, train, config)
    seconds = time.perf_counter() - started
    steps = metrics["steps"]
    result = paired(evaluate(pipe, prompts, args.seeds), base_rows)
    per_step = [sum(h["rewards"].values()) / len(h["rewards"]) for h in metrics["history"]]
    tenth = max(1, len(per_step) // 10)
    return {
        "mode": mode,
        "reward": reward,
        "settings": {k: v for k, v in settings.items() if k in MODES[mode] or k == "learning_rate"},
        "steps": steps,
        "sampled_images": steps * images_per_step(settings),
        "train_seconds": round(seconds, 1),
        "train_reward_first_tenth": mean_and_se(per_step[:tenth])[0],
        "train_reward_last_tenth": mean_and_se(per_step[-tenth:])[0],
        "test": result,
    }


def run_supervised(images: int | None, args, base_rows, prompts, minutes: float | None = None) -> dict:
    """The perfect-data reference: the family's denoising loss on ground-truth renders of train prompts, for
    `images` trained images or `minutes` of training."""
    import numpy as np

    from itercomp.finetune.adapters import make_adapter
    from itercomp.finetune.ema import ParameterEMA
    from itercomp.finetune.job import load_pipeline
    from itercomp.finetune.regulariser import regulariser_from_config

    batch, lr = 16, args.lr or 3e-4
    pipe = load_pipeline(args.base)
    adapter = make_adapter(pipe)
    for module in adapter.frozen_modules().values():
        module.requires_grad_(False).eval()
    params = dict(adapter.denoiser.named_parameters())
    data = regulariser_from_config("shapes", min(images or 4096, 4096), 0, adapter.resolution)
    optimizer = torch.optim.AdamW(params.values(), lr=lr, weight_decay=1e-2)
    ema = ParameterEMA(params, SHARED["ema_decay"])
    rng = np.random.default_rng(0)
    steps = 10**6 if minutes else max(1, round(images / batch))
    started = time.perf_counter()
    for step in range(steps):
        if minutes and time.perf_counter() - started >= minutes * 60:
            steps = step
            break
        pairs, pair_prompts = data.sample(batch, rng)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        adapter.pretrain_loss(pairs, pair_prompts, generator).backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(params, step)
    ema.copy_to(params)
    seconds = time.perf_counter() - started
    return {
        "mode": "supervised",
        "reward": "ground truth",
        "settings": {"learning_rate": lr, "batch_size": batch, "renders": len(data)},
        "steps": steps,
        "sampled_images": 0,
        "trained_images": steps * batch,
        "train_seconds": round(seconds, 1),
        "test": paired(evaluate(pipe, prompts, args.seeds), base_rows),
    }


def table(results: list[dict]) -> str:
    lines = [f"{'mode':<11}{'reward':<13}{'steps':>6}{'min':>6}" + "".join(f"{a[:14]:>22}" for a in REWARD_ASPECTS)]
    lines[0] += f"{'mean':>9}"
    for r in results:
        cells = "".join(f"{r['test'][a]['vs_base']:>+13.3f} ± {r['test'][a]['vs_base_se']:.3f}" for a in REWARD_ASPECTS)
        lines.append(
            f"{r['mode']:<11}{r['reward']:<13}{r['steps']:>6}{r['train_seconds'] / 60:>6.1f}{cells}"
            f"{r['test']['mean_vs_base']:>+9.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from itercomp.finetune.job import load_pipeline
    from itercomp.models.evaluate import evaluation_prompts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--modes", nargs="*", default=list(MODES), choices=list(MODES), help="none: only --supervised-images"
    )
    parser.add_argument("--rewards", nargs="+", dest="reward_kinds", default=["oracle", "learned"])
    parser.add_argument("--images", type=int, default=1600, help="sampled images per run (sets the steps)")
    parser.add_argument("--minutes", type=float, default=None, help="train each run this long instead of --images")
    parser.add_argument("--lr", type=float, default=None, help="one learning rate for every mode")
    parser.add_argument(
        "--supervised-images", type=int, nargs="*", default=[], help="ground-truth renders for the reference runs"
    )
    parser.add_argument("--supervised-minutes", type=float, nargs="*", default=[], help="minutes of the reference runs")
    parser.add_argument("--eval-prompts", type=int, default=100, help="test prompts per aspect")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--base", default=None, help="pipeline folder; default the shipped base")
    parser.add_argument("--reward-models", dest="rewards", default=None, help="default the shipped reward models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-feedback-methods"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feedback_methods.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    prompts = evaluation_prompts(args.eval_prompts, "test", REWARD_ASPECTS)
    base_rows = evaluate(load_pipeline(args.base), prompts, args.seeds)
    results = []
    for mode in args.modes:
        for reward in args.reward_kinds:
            if reward == "oracle" and mode == "refl":
                continue  # the oracle has no gradient
            results.append(run_one(mode, reward, args, base_rows, prompts))
            print(table(results[-1:]), flush=True)
    for images in args.supervised_images:
        results.append(run_supervised(images, args, base_rows, prompts))
        print(table(results[-1:]), flush=True)
    for minutes in args.supervised_minutes:
        results.append(run_supervised(None, args, base_rows, prompts, minutes=minutes))
        print(table(results[-1:]), flush=True)
    summary = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}
    write_json(args.out, summary)
    print(table(results))
    return summary


if __name__ == "__main__":
    main()
