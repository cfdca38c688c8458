"""Benchmark: reward-model accuracy per aspect against the number of training rankings, and throughput.

python bench/rewards.py --data runs/reward-data --sizes 75 150 300 600 --out bench/results/rewards.json
(--data may also hold one folder per aspect, <data>/<aspect>/rankings.jsonl)

For each aspect and each size N, trains a fresh shapes reward model on the first N training rankings (the
config of recipes/configs/rewards_shapes.yaml unless --config says otherwise), then measures on the
test-split rankings: pairwise accuracy against the rankings and agreement with the noise-free oracle.
Writes the JSON and a learning-curve plot (PNG) beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from itercomp.io import write_json
from itercomp.rankings import RankingFile
from itercomp.world import REWARD_ASPECTS
from reward_models.config import RankingDataConfig, RewardTrainConfig, load_config
from reward_models.evaluation import evaluate_rankings
from reward_models.model import RewardModel
from reward_models.simulate import make_rankings
from reward_models.training import train

ROOT = Path(__file__).resolve().parents[1]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for aspect, rows in results.items():
        sizes = [r["train_rankings"] for r in rows]
        line = ax.plot(sizes, [r["test"]["oracle_agreement"] for r in rows], marker="o", label=f"{aspect} (oracle)")
        ax.plot(sizes, [r["test"]["pair_accuracy"] for r in rows], ls="--", color=line[0].get_color(), alpha=0.6)
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("training rankings per aspect")
    ax.set_ylabel("held-out pairwise accuracy (test prompts)")
    ax.set_title("reward models: solid = agreement with oracle, dashed = with rankings", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _flag(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "reward-data", help="folder with rankings.jsonl")
    parser.add_argument("--config", type=Path, default=ROOT / "recipes" / "configs" / "rewards_shapes.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[75, 150, 300, 600])
    parser.add_argument("--aspects", nargs="+", default=list(REWARD_ASPECTS))
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rewards.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results: dict[str, list] = {}
    for aspect in args.aspects:
        # One rankings.jsonl for every aspect, or one per aspect in <data>/<aspect>/.
        rankings = args.data / aspect / "rankings.jsonl"
        if not rankings.is_file():
            rankings = args.data / "rankings.jsonl"
        if not rankings.is_file():
            print(f"no {rankings}: simulating it (itercomp rewards make-data --out {args.data})")
            make_rankings(RankingDataConfig(output_dir=str(args.data)))
        data = RankingFile.read(rankings)
        test = data.select(aspect, "test")
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                config = load_config(RewardTrainConfig, ["--config", str(args.config)])
                overrides = dict(rankings=str(rankings), output_dir=tmp, aspects=(aspect,), max_train_rankings=n)
                if args.epochs:
                    overrides["epochs"] = args.epochs
                config = dataclasses.replace(config, **overrides)
                started = time.perf_counter()
                summary = train(config)[aspect]
                model = RewardModel.from_pretrained(Path(tmp) / aspect)
                result = evaluate_rankings(model, test, data.root)
            row = {
                "train_rankings": summary["train_rankings"],
                "train_pairs": summary["train_pairs"],
                "epochs_run": summary["epochs_run"],
                "best_epoch": summary["best_epoch"],
                "train_seconds": summary["seconds"],
                "pairs_per_second": summary["pairs_per_second"],
                "wall_seconds": round(time.perf_counter() - started, 1),
                "test": result,
            }
            results.setdefault(aspect, []).append(row)
            print(
                f"{aspect:26s} N={row['train_rankings']:4d}  oracle agreement {result['oracle_agreement']:.3f}  "
                f"pair accuracy {result['pair_accuracy']:.3f}  {row['pairs_per_second']} pairs/s"
            )
    picture = args.out.with_name(args.out.stem + "_learning_curve.png")
    write_json(
        args.out,
        {
            "command": "python bench/rewards.py " + " ".join(f"--{k} {_flag(v)}" for k, v in vars(args).items()),
            "threads": torch.get_num_threads(),
            "results": results,
            "plot": str(picture.relative_to(ROOT)) if picture.is_relative_to(ROOT) else str(picture),
        },
    )
    plot(results, picture)
    print(f"wrote {args.out} and {picture}")


if __name__ == "__main__":
    main()
