"""Benchmark: the sampler's share of fresh noise per step (eta), and the noise level below which it is drawn,
measured with the oracle and the flip test.

python bench/sampler_eta.py --member itercomp/weights/base --etas 0 0.5 0.7 0.85 1 --prompts 100 --seeds 2
python bench/sampler_eta.py --etas 0.7 --eta-below 1 0.8 0.7 0.6 0.5 --prompts 100 --seeds 2 --flip

For each eta x eta_below the member samples `--prompts` prompts per aspect of `--split` (val by default: the
shipped setting is chosen here, the test split stays for the final measurement) x `--seeds` seeds, the same noise
for every setting, with the member's steps and guidance. Per setting: binary accuracy per aspect, the share of
binding objects drawn, and the change against the first setting, paired by prompt and seed, with its standard
error; with `--flip`, `bench/relation_probe.py`'s flip test on the split's spatial prompts (the share of prompt /
flipped-prompt pairs that keep the same order; 0 reads the relation). eta 0 is the Euler ODE, 1 diffusers'
stochastic sampling (`FlowMatchEtaScheduler`); eta_below 1 draws fresh noise on every step, lower values follow
the ODE on the steps that end above it. `itercomp pretrain` ships its `sampler_eta` and `sampler_eta_below`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from relation_probe import sampled_layout  # noqa: E402  (a sibling bench script)

from itercomp.io import write_json
from itercomp.loop.report import paired_gain
from itercomp.models.evaluate import evaluate_pipeline, evaluation_prompts
from itercomp.models.pretrain import load_member
from itercomp.models.scheduler import FlowMatchEtaScheduler, fresh_noise
from itercomp.world.vocab import REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]


def flip_test(pipe, prompts: int, split: str, steps: int) -> tuple[float | None, int]:
    """`bench/relation_probe.py`'s flip test on `prompts` spatial prompts of `split`, with `steps` sampler steps:
    the share of pairs (both objects found in both images) that keep the same order, and the number of pairs."""
    kept = []
    for k, (_, prompt) in enumerate(evaluation_prompts(prompts, split, ("spatial_relationship",))):
        kept.append(sampled_layout(pipe, prompt, seed=k, num_inference_steps=steps)[1])
    kept = [same for same in kept if same is not None]
    return (float(np.mean(kept)) if kept else None), len(kept)


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", type=Path, default=ROOT / "itercomp/weights/base", help="a ShapesDiTPipeline")
    parser.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.85, 1.0])
    parser.add_argument("--eta-below", type=float, nargs="+", default=[1.0],
                        help="noise levels below which the fresh noise is drawn (1: every step)")  # fmt: skip
    parser.add_argument("--flip", action="store_true", help="also run the flip test on the split's spatial prompts")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--prompts", type=int, default=100, help="prompts per aspect")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/sampler_eta.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = load_member(args.member)
    config = pipe.scheduler.config
    prompts = evaluation_prompts(args.prompts, args.split, aspects=REWARD_ASPECTS)
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "member_sampler": fresh_noise(config), "samplers": {}}  # fmt: skip
    first = None
    for eta, below in [(eta, below) for eta in args.etas for below in args.eta_below]:
        pipe.scheduler = FlowMatchEtaScheduler.from_config(config, eta=eta, eta_below=below, stochastic_sampling=False)
        started = time.perf_counter()
        evaluation = evaluate_pipeline(
            pipe, prompts, seeds=range(args.seeds), num_inference_steps=args.steps, guidance_scale=args.guidance
        )
        summary, rows = evaluation["summary"], evaluation["rows"]
        first = first or rows
        results["samplers"][name := f"eta {eta} below {below}"] = row = {
            "eta": eta,
            "eta_below": below,
            "per_aspect": summary,
            "mean_accuracy_3_aspects": sum(summary[a]["accuracy"] for a in REWARD_ASPECTS) / 3,
            "against_first": paired_gain(first, rows, "accuracy"),
        }
        if args.flip:
            row["flip_same_order"], row["flip_pairs_found"] = flip_test(pipe, args.prompts, args.split, args.steps)
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: " + ", ".join(f"{a} {summary[a]['accuracy']:.3f}" for a in REWARD_ASPECTS)
              + (f", flip test {share(row['flip_same_order'])}" if args.flip else ""), flush=True)  # fmt: skip
    write_json(args.out, results)

    names = ["binding", "spatial", "non-spatial"]
    flip = " flip test |" if args.flip else ""
    print(f"\n| eta | below | {' | '.join(names)} | mean of 3 (change) | binding objects drawn |{flip}")
    print("|---" * (7 + args.flip) + "|")
    for r in results["samplers"].values():
        cells = " | ".join(f"{r['per_aspect'][a]['accuracy']:.3f}" for a in REWARD_ASPECTS)
        change = r["against_first"]["mean of 3"]
        objects = r["per_aspect"][REWARD_ASPECTS[0]]["object_accuracy"]
        print(f"| {r['eta']} | {r['eta_below']} | {cells} | {r['mean_accuracy_3_aspects']:.3f} ({change['gain']:+.3f}"
              f" +- {change['se']:.3f}) | {objects:.3f} |" + (f" {share(r['flip_same_order'])} |" if args.flip else ""))  # fmt: skip
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
