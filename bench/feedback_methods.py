"""Benchmark: which feedback method moves the base model, with the oracle (a perfect annotator) and with the
learned reward models, at equal CPU time (--minutes) or an equal number of sampled images (--images).

python bench/feedback_methods.py --minutes 10 30 60 --supervised-minutes 10 30 60 --eval-prompts 100 \
    --seeds 0 1 2 3 --out bench/results/feedback_minutes/all.json [--resume]
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

With --minutes M1 M2 ..., every run is a curve: it trains until the step that passes M1 minutes of training
(FeedbackConfig.max_minutes: the steps' time, not the evaluations), is evaluated, resumes from its checkpoint up
to M2, is evaluated, and so on; the reference runs the same way in one process (--supervised-minutes). Rows are
written to --out as they finish, and --resume keeps them and continues each run from its checkpoint in --work,
so a curve longer than a sitting goes on in the next one. Otherwise steps are set so that every run samples
about --images images for feedback (a step of select, dpo or grpo
samples batch_size x the mode's samples per prompt; one of refl samples batch_size). Each mode's learning rate, batch and
group come from MODES (the largest tried that did not break the model here; --lr overrides all). The fine-tuned
model and the base are sampled on the same test prompts and seeds, and scored by the oracle; differences are
paired per (prompt, seed), with standard errors. Writes JSON and prints a table, with the learned
rewards' mean gain as a share of the oracle's for each mode and budget measured with both.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from itercomp.config import config_from_dict, merge_values, parse_overrides
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


def mode_settings(mode: str, args) -> dict:
    """SHARED, then the mode's MODES entry, then --lr and --set (which may change one key of a section)."""
    settings = merge_values({**SHARED, **MODES[mode]}, {"learning_rate": args.lr} if args.lr else {})
    return merge_values(settings, args.overrides)


def recorded_settings(config, keys: list[str], settings: dict) -> dict:
    """The run's typed values of `keys` (a section: only the fields that `settings` set), for the results file:
    `--set dpo.samples_per_prompt=8` is recorded as 8, not as the flag's text."""
    out = {}
    for key in keys:
        value = getattr(config, key)
        out[key] = {name: getattr(value, name) for name in settings[key]} if isinstance(settings[key], dict) else value
    return out


def images_per_step(settings: dict) -> int:
    """batch_size x the images a black-box mode samples per prompt (its section's samples_per_prompt or GRPO's
    group_size; 1 for refl)."""
    sizes = {
        **settings.get("select", {}),
        **settings.get("dpo", {}),
        **settings.get("grpo", {}),
        **settings.get("awm", {}),
    }
    return int(settings["batch_size"]) * int(sizes.get("samples_per_prompt", sizes.get("group_size", 1)))


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
    # the aspects' prompts are disjoint, so their errors add in quadrature
    out["mean_vs_base_se"] = math.sqrt(sum(out[a]["vs_base_se"] ** 2 for a in REWARD_ASPECTS)) / len(diffs)
    return out


def evaluate(pipe, prompts, seeds) -> list[dict]:
    from itercomp.models.evaluate import evaluate_pipeline

    return evaluate_pipeline(pipe, prompts, seeds=seeds, num_inference_steps=20, guidance_scale=3.0)["rows"]


def run_one(mode: str, reward: str, args, base_rows, prompts, minutes: float | None = None, resume=False) -> dict:
    """One mode with one reward: --images sampled images, or `minutes` of training in all (the trainer counts its
    steps' time across resumes, so with `resume` it goes on from the run's checkpoint up to that point)."""
    from itercomp.commands.finetune import load_reward_fn
    from itercomp.finetune import FeedbackRunConfig, finetune
    from itercomp.finetune.job import load_pipeline
    from itercomp.world import generate_prompts

    settings = mode_settings(mode, args)
    steps = 10**6 if minutes else max(1, round(args.images / images_per_step(settings)))
    run = {"grad_mode": mode, "max_steps": steps, "max_minutes": minutes, "output_dir": str(Path(args.work) / f"{mode}-{reward}"),
           "resume": resume, "threads": args.threads, "reward": reward, "rewards": args.rewards}  # fmt: skip
    config = config_from_dict(FeedbackRunConfig, {**settings, **run})
    reward_fn = load_reward_fn(config)
    train = [p for a in REWARD_ASPECTS for p in generate_prompts(a, "train", 500)]
    pipe = load_pipeline(args.base)
    metrics = finetune(pipe, reward_fn, train, config)
    steps = metrics["steps"]
    result = paired(evaluate(pipe, prompts, args.seeds), base_rows)
    per_step = [sum(h["rewards"].values()) / len(h["rewards"]) for h in metrics["history"]]
    tenth = max(1, len(per_step) // 10)
    return {
        "mode": mode,
        "reward": reward,
        "minutes": minutes,
        "settings": recorded_settings(
            config, [k for k in settings if k in MODES[mode] or k in args.overrides or k == "learning_rate"], settings
        ),
        "steps": steps,
        "sampled_images": steps * images_per_step(settings),
        "train_seconds": metrics["train_seconds"],
        "train_reward_first_tenth": mean_and_se(per_step[:tenth])[0],
        "train_reward_last_tenth": mean_and_se(per_step[-tenth:])[0],
        "test": result,
    }


def run_supervised(images: int | None, args, base_rows, prompts, minutes: list[float] = ()) -> list[dict]:
    """The perfect-data reference: the family's denoising loss on ground-truth renders of train prompts, for
    `images` trained images, or one run evaluated (EMA weights, off the training clock) at each of `minutes`."""
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
    points = sorted(minutes) or [None]
    steps = 10**6 if minutes else max(1, round(images / batch))
    rows, trained = [], 0.0

    def row(step: int) -> dict:
        weights = {n: p.detach().clone() for n, p in params.items()}
        ema.copy_to(params)
        test = paired(evaluate(pipe, prompts, args.seeds), base_rows)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
        return {
            "mode": "supervised", "reward": "ground truth", "minutes": points[len(rows)],
            "settings": {"learning_rate": lr, "batch_size": batch, "renders": len(data)}, "steps": step,
            "sampled_images": 0, "trained_images": step * batch, "train_seconds": round(trained, 1), "test": test,
        }  # fmt: skip

    for step in range(steps):
        if minutes and trained >= points[len(rows)] * 60:
            rows.append(row(step))
            if len(rows) == len(points):
                return rows
        started = time.perf_counter()
        pairs, pair_prompts = data.sample(batch, rng)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        adapter.pretrain_loss(pairs, pair_prompts, generator).backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(params, step)
        trained += time.perf_counter() - started
    return [*rows, row(steps)]


def base_evaluation(args, prompts) -> list[dict]:
    """The base model's evaluation rows, kept in --work so that a resumed bench pairs with the same rows."""
    from itercomp.finetune.job import load_pipeline

    path = Path(args.work) / "base_rows.json"
    key = {"base": args.base, "prompts": [list(p) for p in prompts], "seeds": list(args.seeds)}
    if args.resume and path.is_file():
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            return saved["rows"]
    rows = evaluate(load_pipeline(args.base), prompts, args.seeds)
    write_json(path, {"key": key, "rows": rows})
    return rows


def oracle_shares(results: list[dict]) -> list[dict]:
    """For each mode and budget measured with both rewards: the learned rewards' mean gain as a share of the
    oracle's (the ceiling), where the oracle's gain is positive; a share near 1 puts the gap in the update, near 0
    in the reward."""
    gains = {(r["mode"], r["reward"], r.get("minutes"), r.get("images")): r["test"]["mean_vs_base"] for r in results}
    shares = []
    for (mode, reward, minutes, images), oracle in gains.items():
        learned = gains.get((mode, "learned", minutes, images))
        if reward == "oracle" and learned is not None and oracle > 0:
            budget = {"minutes": minutes} if minutes is not None else {"images": images}
            shares.append({"mode": mode, **budget, "oracle": oracle, "learned": learned, "share": learned / oracle})
    return shares


def table(results: list[dict]) -> str:
    lines = [f"{'mode':<11}{'reward':<13}{'steps':>6}{'min':>6}" + "".join(f"{a[:14]:>22}" for a in REWARD_ASPECTS)]
    lines[0] += f"{'mean of 3':>19}"
    for r in results:
        cells = "".join(f"{r['test'][a]['vs_base']:>+13.3f} ± {r['test'][a]['vs_base_se']:.3f}" for a in REWARD_ASPECTS)
        lines.append(
            f"{r['mode']:<11}{r['reward']:<13}{r['steps']:>6}{r['train_seconds'] / 60:>6.1f}{cells}"
            f"{r['test']['mean_vs_base']:>+11.3f} ± {r['test'].get('mean_vs_base_se', math.nan):.3f}"
        )
    for s in oracle_shares(results):
        budget = f"{s['minutes']:g} min" if "minutes" in s else f"{s['images']} images"
        lines.append(f"{s['mode']} at {budget}: the learned rewards reach {s['share']:.0%} of the oracle's mean gain "
                     f"({s['learned']:+.3f} of {s['oracle']:+.3f})")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from itercomp.models.evaluate import evaluation_prompts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--modes", nargs="*", default=list(MODES), choices=list(MODES), help="none: only --supervised-images"
    )
    parser.add_argument("--rewards", nargs="+", dest="reward_kinds", default=["oracle", "learned"])
    parser.add_argument("--images", type=int, default=1600, help="sampled images per run (sets the steps)")
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="*",
        default=[],
        help="training minutes of each run instead of --images; several: "
        "the points of its curve (one run, evaluated at each)",
    )
    parser.add_argument("--lr", type=float, default=None, help="one learning rate for every mode")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE",
        help="fine-tuning settings for every mode, over MODES (e.g. awm.negative_weight=0 pretrain_loss_weight=0.3)",
    )  # fmt: skip
    parser.add_argument(
        "--supervised-images", type=int, nargs="*", default=[], help="ground-truth renders for the reference runs"
    )
    parser.add_argument(
        "--supervised-minutes", type=float, nargs="*", default=[], help="the reference's curve points (one run)"
    )
    parser.add_argument("--eval-prompts", type=int, default=100, help="test prompts per aspect")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--base", default=None, help="pipeline folder; default the shipped base")
    parser.add_argument("--reward-models", dest="rewards", default=None, help="default the shipped reward models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-feedback-methods"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feedback_methods.json")
    parser.add_argument("--resume", action="store_true", help="keep --out's rows and continue the runs in --work")
    args = parser.parse_args(argv)
    args.overrides = parse_overrides(args.set)
    torch.set_num_threads(args.threads)

    prompts = evaluation_prompts(args.eval_prompts, "test", REWARD_ASPECTS)
    base_rows = base_evaluation(args, prompts)
    results = json.loads(args.out.read_text())["results"] if args.resume and args.out.is_file() else []
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "resume")}

    def add(rows: list[dict]) -> None:
        results.extend(rows)
        write_json(
            args.out, {"settings": settings, "results": results, "learned_share_of_oracle": oracle_shares(results)}
        )
        print(table(rows), flush=True)

    def done(mode: str, reward: str, minutes: float | None) -> bool:
        return any(r["mode"] == mode and r["reward"] == reward and r.get("minutes") == minutes for r in results)

    for mode in args.modes:
        for reward in args.reward_kinds:
            if reward == "oracle" and mode == "refl":
                continue  # the oracle has no gradient
            for k, minutes in enumerate(sorted(args.minutes) or [None]):
                if not done(mode, reward, minutes):  # each point resumes the run's checkpoint from the last one
                    add([run_one(mode, reward, args, base_rows, prompts, minutes, resume=args.resume or k > 0)])
    for images in args.supervised_images:
        add(run_supervised(images, args, base_rows, prompts))
    if args.supervised_minutes and not all(done("supervised", "ground truth", m) for m in args.supervised_minutes):
        results[:] = [r for r in results if r["mode"] != "supervised"]  # the reference runs in one process
        add(run_supervised(None, args, base_rows, prompts, minutes=args.supervised_minutes))
    print(table(results))
    return {"settings": settings, "results": results, "learned_share_of_oracle": oracle_shares(results)}


if __name__ == "__main__":
    main()
