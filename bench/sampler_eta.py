"""Benchmark: the sampler's share of fresh noise per step (eta), measured with the oracle.

python bench/sampler_eta.py --member itercomp/weights/base --etas 0 0.5 0.7 0.85 1 --prompts 100 --seeds 2

For each eta the member samples `--prompts` prompts per aspect of `--split` (val by default: the shipped setting
is chosen here, the test split stays for the final measurement) x `--seeds` seeds, the same noise for every eta,
with the member's steps and guidance. Per eta: binary accuracy per aspect, the share of binding objects drawn,
and the change against the first eta, paired by prompt and seed, with its standard error. eta 0 is the Euler
ODE, 1 diffusers' stochastic sampling (`FlowMatchEtaScheduler`); `itercomp pretrain` ships its `sampler_eta`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from itercomp.io import write_json
from itercomp.loop.report import paired_gain
from itercomp.models.evaluate import evaluate_pipeline, evaluation_prompts
from itercomp.models.pretrain import load_member
from itercomp.models.scheduler import FlowMatchEtaScheduler, scheduler_eta
from itercomp.world.vocab import REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", type=Path, default=ROOT / "itercomp/weights/base", help="a ShapesDiTPipeline")
    parser.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.85, 1.0])
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
               "member_eta": scheduler_eta(config), "etas": {}}  # fmt: skip
    first = None
    for eta in args.etas:
        pipe.scheduler = FlowMatchEtaScheduler.from_config(config, eta=eta, stochastic_sampling=False)
        started = time.perf_counter()
        evaluation = evaluate_pipeline(
            pipe, prompts, seeds=range(args.seeds), num_inference_steps=args.steps, guidance_scale=args.guidance
        )
        summary, rows = evaluation["summary"], evaluation["rows"]
        first = first or rows
        results["etas"][str(eta)] = {
            "per_aspect": summary,
            "mean_accuracy_3_aspects": sum(summary[a]["accuracy"] for a in REWARD_ASPECTS) / 3,
            "against_first": paired_gain(first, rows, "accuracy"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"eta {eta}: " + ", ".join(f"{a} {summary[a]['accuracy']:.3f}" for a in REWARD_ASPECTS), flush=True)
    write_json(args.out, results)

    names = ["binding", "spatial", "non-spatial"]
    print(f"\n| eta | {' | '.join(names)} | mean of 3 (change) | binding objects drawn |\n|---|---|---|---|---|---|")
    for eta, r in results["etas"].items():
        cells = " | ".join(f"{r['per_aspect'][a]['accuracy']:.3f}" for a in REWARD_ASPECTS)
        change = r["against_first"]["mean of 3"]
        objects = r["per_aspect"][REWARD_ASPECTS[0]]["object_accuracy"]
        print(f"| {eta} | {cells} | {r['mean_accuracy_3_aspects']:.3f} ({change['gain']:+.3f} +- "
              f"{change['se']:.3f}) | {objects:.3f} |")  # fmt: skip
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
