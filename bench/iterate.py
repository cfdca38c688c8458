"""Benchmark: does iterating help? The base model vs rounds 1..R of `itercomp iterate`, and beside them one round
fine-tuned for the same total number of steps (R x steps per round), on the shapes world's test split.

python bench/iterate.py --rounds 3 --eval-prompts 100 --seeds 4 --out runs/bench-iterate
(--config FILE: an IterateConfig YAML for every other setting; --resume continues both runs)

Both runs share every setting but the fine-tuning steps and the number of rounds, so their round 1 ranks the same
prompts with the same gallery and trains the same reward models; the single round then fine-tunes R times as
long, and never sees a grown gallery or refined reward models. Test prompts and seeds are the same for every
model. Accuracy is the oracle's binary verdict; the standard errors treat prompts as the unit (the seeds of one
prompt are not independent), and differences to the base model are paired by prompt.

Writes bench/results/iterate.json (and prints a table); the runs' own report.json, scores.png and grids stay in
--out.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from itercomp.config import config_from_dict, read_yaml, to_dict
from itercomp.io import read_json, read_jsonl, write_json
from itercomp.loop.config import IterateConfig
from itercomp.loop.layout import RunLayout
from itercomp.world.vocab import ASPECTS, REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]


def prompt_means(layout: RunLayout, k: int) -> dict[str, dict[str, float]]:
    """{aspect: {prompt_id: accuracy over the seeds}} of round k's evaluation."""
    correct = defaultdict(lambda: defaultdict(list))
    for row in read_jsonl(layout.stage(k, "eval") / "rows.jsonl"):
        correct[row["aspect"]][row["prompt_id"]].append(float(row["correct"]))
    return {a: {p: sum(v) / len(v) for p, v in per.items()} for a, per in correct.items()}


def mean_and_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def paired(means: dict, other: dict) -> dict[str, tuple[float, float]]:
    """Per aspect, and for the mean of the three reward aspects: `means` - `other` paired by prompt, +- SE (the
    aspects' prompts are independent, so the mean's SE is the root of the summed squares over 3)."""
    diffs = {a: mean_and_se([means[a][p] - other[a][p] for p in means[a]]) for a in ASPECTS}
    diffs["mean of 3"] = (
        sum(diffs[a][0] for a in REWARD_ASPECTS) / len(REWARD_ASPECTS),
        math.sqrt(sum(diffs[a][1] ** 2 for a in REWARD_ASPECTS)) / len(REWARD_ASPECTS),
    )
    return diffs


def model_row(layout: RunLayout, k: int, base: dict) -> dict:
    """Per aspect: accuracy +- SE, mean soft score, and the paired difference to the base model (+- SE); and the
    mean of the three reward aspects' differences."""
    means = prompt_means(layout, k)
    scores = read_json(layout.stage(k, "eval") / "eval.json")
    diffs = paired(means, base)
    row = {}
    for aspect in ASPECTS:
        accuracy, se = mean_and_se(list(means[aspect].values()))
        row[aspect] = {
            "accuracy": accuracy, "accuracy_se": se, "mean_score": scores[aspect]["mean_score"],
            "images": scores[aspect]["n"], "vs_base": diffs[aspect][0], "vs_base_se": diffs[aspect][1],
        }  # fmt: skip
    row["mean of 3"] = {"vs_base": diffs["mean of 3"][0], "vs_base_se": diffs["mean of 3"][1]}
    return row


def run_loop(values: dict, resume: bool) -> tuple[dict, float]:
    from itercomp.loop.run import iterate

    config = config_from_dict(IterateConfig, values)
    started = time.perf_counter()
    report = iterate(config, resume=resume)
    return report, time.perf_counter() - started


def table(rows: list[tuple[str, dict]]) -> str:
    """Per cell: accuracy ± SE (paired difference to the base model), mean soft score."""
    lines = ["| model | " + " | ".join(ASPECTS) + " | mean of 3, gain |", "|---" * (len(ASPECTS) + 2) + "|"]
    for name, row in rows:
        cells = [
            f"{row[a]['accuracy']:.3f} ± {row[a]['accuracy_se']:.3f} ({row[a]['vs_base']:+.3f}), "
            f"score {row[a]['mean_score']:.3f}"
            for a in ASPECTS
        ]
        gain = row["mean of 3"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {gain['vs_base']:+.3f} ± {gain['vs_base_se']:.3f} |")
    return "\n".join(lines)


def comparison(name: str, diffs: dict[str, tuple[float, float]]) -> str:
    return f"{name}, paired by prompt: " + ", ".join(f"{a} {d:+.3f} ± {se:.3f}" for a, (d, se) in diffs.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the iterative run (default 3)")
    default_steps = IterateConfig().finetune["max_steps"]
    parser.add_argument("--steps", type=int, default=default_steps,
                        help=f"fine-tuning steps per round (default {default_steps}, the loop's)")  # fmt: skip
    parser.add_argument("--eval-prompts", type=int, default=100, help="test prompts per aspect (default 100)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per test prompt (default 4)")
    parser.add_argument("--config", type=Path, help="IterateConfig YAML for every other setting")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-iterate"), help="where the two runs go")
    parser.add_argument("--resume", action="store_true", help="continue runs left in --out")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "iterate.json")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be >= 1")

    common = read_yaml(args.config) if args.config else {}
    common.update(eval_prompts_per_aspect=args.eval_prompts, eval_seeds=list(range(args.seeds)))
    finetune = dict(common.get("finetune") or {})
    iterative = {
        **common, "rounds": args.rounds, "output_dir": str(args.out / "iterative"),
        "finetune": {**finetune, "max_steps": args.steps},
    }  # fmt: skip
    single = {
        **common, "rounds": 1, "output_dir": str(args.out / "single"),
        "finetune": {**finetune, "max_steps": args.steps * args.rounds},
    }  # fmt: skip

    report_iterative, seconds_iterative = run_loop(iterative, args.resume)
    report_single, seconds_single = run_loop(single, args.resume)

    a, b = RunLayout(args.out / "iterative"), RunLayout(args.out / "single")
    base = prompt_means(a, 0)
    rows = [("base (round 0)", model_row(a, 0, base))]
    rows += [(f"round {k} ({k * args.steps} steps)", model_row(a, k, base)) for k in range(1, args.rounds + 1)]
    rows.append((f"single round ({args.rounds * args.steps} steps)", model_row(b, 1, base)))
    rounds_vs_single = paired(prompt_means(a, args.rounds), prompt_means(b, 1))
    text = table(rows) + "\n" + comparison(f"{args.rounds} rounds - one round of equal steps", rounds_vs_single)
    print(text)
    write_json(
        args.json,
        {
            "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
            "settings": {"iterative": to_dict(config_from_dict(IterateConfig, iterative)), "single": to_dict(config_from_dict(IterateConfig, single))},
            "note": "accuracy: mean over test prompts of the share of seeds the oracle calls correct; se by prompt; "
            "vs_base: paired difference to the base model on the same prompts and seeds",
            "models": {name: row for name, row in rows},
            "rounds_vs_single": {k: {"diff": d, "se": se} for k, (d, se) in rounds_vs_single.items()},
            "rewards_per_round": {
                e["round"]: {asp: (e.get("rewards") or {}).get(asp, {}).get("pair_accuracy") for asp in REWARD_ASPECTS}
                for e in report_iterative["rounds"] if e["round"] > 0
            },
            "timings_seconds": {
                "iterative": round(seconds_iterative, 1), "single": round(seconds_single, 1),
                "iterative_per_round": {e["round"]: e["timings"] for e in report_iterative["rounds"]},
                "single_per_round": {e["round"]: e["timings"] for e in report_single["rounds"]},
            },
            "table": text,
        },
    )  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
