"""Benchmark: reward models that rank the base model's own samples.

python bench/reward_own_samples.py --threads 1

Reward feedback compares seeds of one model on one prompt. bench/reward_self_pairs.py measured that the shipped
reward models, and the same refined on the oracle's rankings of the base's seeds, order such pairs barely better
than chance. This measures the remedy (own-sample rankings, exact symmetries, ensembles) on the shipped base's
samples of test prompts:

1. **samples** (cached under `--work`, shared with bench/reward_self_pairs.py): the base model draws
   `--train-prompts` train and `--val-prompts` val prompts per aspect with `--seeds` seeds, and `--test-prompts`
   test prompts with `--test-seeds` seeds.
2. **rankings** (`reward_models.own_samples`): per prompt, the seeds plus colour-swapped hard negatives of the best
   ones; the same left-right mirrored with left/right swapped; a clean render against one-edit renders. Ordered
   by the oracle: verdict first, then soft score. The rankings and pairs are counted (IterComp used 52,500).
3. **members**: `--members` reward models per aspect, each refined from `--rewards` on those rankings with its
   own seed (`--epochs`, `--lr`; `--train-views`: each batch under a random exact symmetry). The ensemble is
   these plus the shipped models.
4. **evaluate** on the test seeds with `reward_models.evaluation.evaluate_rankings` (what `itercomp rewards eval`
   runs): same-model pair accuracy on pairs whose oracle verdicts differ, and best-of-N (the reward's pick of the
   N seeds against a random seed and the oracle's pick) -- for the shipped models (plain, averaged over `--views`
   symmetric views, contrastive-prompt normalised), each member, the ensemble under each aggregate, and the
   conservative ensemble averaged over the views.

Targets (what reward feedback needs): verdict pair accuracy >= 0.85 per aspect; gain share
(pick - random) / (oracle - random) >= 0.75. Writes JSON and prints a table; measured numbers are in docs/rewards.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reward_self_pairs import render_data, test_data  # noqa: E402

from itercomp.io import read_json, read_jsonl, save_png, write_json, write_jsonl  # noqa: E402
from itercomp.records import Candidate, Ranking, image_id  # noqa: E402
from itercomp.world import REWARD_ASPECTS, prompt_id  # noqa: E402
from reward_models.config import RewardTrainConfig  # noqa: E402
from reward_models.ensemble import AGGREGATES, ENSEMBLE_FILE, RewardEnsemble  # noqa: E402
from reward_models.evaluation import evaluate_rankings  # noqa: E402
from reward_models.own_samples import OwnSamplesConfig, build_rankings, count_pairs, ranked  # noqa: E402
from reward_models.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ITERCOMP_PAIRS = 52_500  # IterComp's human-ranked pairs (the paper's composition-aware preference data)


def test_rankings(data: dict[str, dict], out: Path) -> Path:
    """The test seeds as one ranking per prompt (candidates: generator 'base', seeds 0..N-1), oracle-ordered."""
    path = out / "rankings.jsonl"
    if path.is_file():
        return path
    rows = []
    for aspect, d in data.items():
        for k, prompt in enumerate(d["prompts"]):
            pid = prompt_id(prompt)
            candidates, keys = [], []
            for s in range(len(d["images"])):
                iid = image_id(pid, "base", s)
                rel = f"images/{aspect}/{iid}.png"
                candidates.append(Candidate(iid, "base", s, rel, save_png(out / rel, d["images"][s, k])))
                keys.append(d["correct"][s, k] + d["scores"][s, k])
            rows.append(ranked(prompt, aspect, candidates, keys).to_dict())
    write_jsonl(path, rows)
    return path


def own_rankings(samples: list[dict], work: Path, config: OwnSamplesConfig) -> tuple[Path, dict]:
    """Training rankings from the cached samples (cached), and their counts per aspect."""
    out = work / "own-data"
    path = out / "rankings.jsonl"
    if not path.is_file():
        rankings = build_rankings(samples, work, out, config)
        write_jsonl(path, [r.to_dict() for r in rankings])
    rankings = [Ranking.from_dict(r) for r in read_jsonl(path)]
    counts = {}
    for aspect in REWARD_ASPECTS:
        mine = [r for r in rankings if r.aspect == aspect]
        same = [r for r in mine if any(c.generator == "base" for c in r.candidates)]
        counts[aspect] = {"rankings": len(mine), "pairs": count_pairs(mine),
                          "rankings_with_base_seeds": len(same)}  # fmt: skip
    counts["total"] = {k: sum(c[k] for c in counts.values()) for k in ("rankings", "pairs", "rankings_with_base_seeds")}
    return path, counts


def evaluate(path, rankings: Path, **options) -> dict:
    """Per aspect: evaluate_rankings on the test rankings (same-model metrics included)."""
    from itercomp.rankings import RankingFile

    data = RankingFile.read(rankings)
    out = {}
    for aspect in REWARD_ASPECTS:
        ensemble = RewardEnsemble.from_pretrained(path, aspects=(aspect,), **options).eval()
        single = ensemble.members == 1 and ensemble.contrast is None and ensemble.views is None
        model = ensemble.models[aspect] if single else _Scorer(ensemble, aspect)
        r = evaluate_rankings(model, data.select(aspect, "test"), data.root)
        out[aspect] = {"oracle_agreement": r["oracle_agreement"], **r["same_model"]}
    return out


class _Scorer:
    def __init__(self, ensemble, aspect):
        self.ensemble, self.aspect, self.config = ensemble, aspect, ensemble.models[aspect].config

    def eval(self):
        return self

    def score(self, images, prompts):
        return self.ensemble(images, prompts)[self.aspect]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(ROOT / "itercomp/weights/base"), help="the generator (pipeline folder)")
    parser.add_argument("--rewards", default=str(ROOT / "itercomp/weights/rewards"), help="reward models to refine")
    parser.add_argument("--train-prompts", type=int, default=200, help="train prompts per aspect")
    parser.add_argument("--val-prompts", type=int, default=40, help="val prompts per aspect (the trainer's val split)")
    parser.add_argument("--seeds", type=int, default=6, help="samples per train/val prompt")
    parser.add_argument("--test-prompts", type=int, default=150, help="test prompts per aspect")
    parser.add_argument("--test-seeds", type=int, default=4, help="samples per test prompt (N of best-of-N)")
    parser.add_argument("--negatives-from", type=int, default=2, help="colour-swap negatives of this many best seeds")
    parser.add_argument("--no-mirror", action="store_true", help="leave out the mirrored rankings")
    parser.add_argument("--edit-renders", type=int, default=3, help="one-edit renders per prompt (0: none)")
    parser.add_argument("--members", type=int, default=2, help="refined reward models per aspect (with the shipped "
                        "ones: the ensemble's members)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=3, help="refinement epochs (the trainer keeps the best val)")
    parser.add_argument("--views", type=int, default=12, help="symmetric views averaged per reward")
    parser.add_argument("--train-views", action="store_true",
                        help="refine with a random exact symmetry per batch (RewardTrainConfig.train_views)")  # fmt: skip
    parser.add_argument("--lr", type=float, default=5e-4, help="refinement learning rate")
    parser.add_argument("--batch-rankings", type=int, default=16, help="rankings per training step")
    parser.add_argument("--sample-steps", type=int, default=20, help="sampler steps of the base model")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance of the base model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default=str(ROOT / "runs/bench-reward-self-pairs"), help="samples and models")
    parser.add_argument("--models", default=None, help="where the members go (default: <work>/own-models)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/reward_own_samples.json"))
    args = parser.parse_args()
    if args.seeds < 2 or args.test_seeds < 2:
        parser.error("--seeds and --test-seeds must be >= 2: a ranking and a pick need two samples")
    if args.members < 1:
        parser.error("--members must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    started, work = time.time(), Path(args.work)
    from itercomp.models.pretrain import load_member

    pipe = load_member(Path(args.base))
    pipe.set_progress_bar_config(disable=True)
    samples = render_data(pipe, args, work)
    data = test_data(pipe, args, work)
    test = test_rankings(data, work / "test-rankings")
    config = OwnSamplesConfig(negatives_from=args.negatives_from, mirror=not args.no_mirror,
                              edit_renders=args.edit_renders)  # fmt: skip
    rankings, counts = own_rankings(samples, work, config)
    print(f"training rankings: {counts['total']['rankings']} ({counts['total']['pairs']} pairs; IterComp: "
          f"{ITERCOMP_PAIRS} pairs)")  # fmt: skip

    models = Path(args.models) if args.models else work / "own-models"
    names = [f"member_{k}" for k in range(args.members)]
    for k, name in enumerate(names):
        if (models / name / "train_summary.json").is_file():
            continue
        train(RewardTrainConfig(rankings=str(rankings), output_dir=str(models / name), init_from=args.rewards,
                                epochs=args.epochs, learning_rate=args.lr, batch_rankings=args.batch_rankings,
                                seed=k, threads=args.threads, cpu=True,
                                train_views="shapes_symmetries" if args.train_views else None))  # fmt: skip
    trained = {name: {a: s["best_val_accuracy"] for a, s in read_json(models / name / "train_summary.json")["aspects"].items()}
               for name in names}  # fmt: skip
    # The ensemble: the models refined from (shipped) plus the shipped ones, each normalised on its own scale.
    if not (models / "shipped").is_dir():
        shutil.copytree(args.rewards, models / "shipped")
    write_json(models / ENSEMBLE_FILE, {"members": ["shipped", *names], "aggregate": "mean_minus_std",
                                        "spread_weight": 1.0, "views": "shapes_symmetries",
                                        "view_count": args.views})  # fmt: skip

    views = {"views": "shapes_symmetries", "view_count": args.views}
    results = {"shipped": evaluate(args.rewards, test), f"shipped_views{args.views}": evaluate(args.rewards, test, **views),
               "shipped_contrast": evaluate(args.rewards, test, contrast="shapes_one_edit")}  # fmt: skip
    for name in names:
        results[name] = evaluate(models / name, test)
    for aggregate in AGGREGATES:
        results[f"ensemble_{aggregate}"] = evaluate(models, test, aggregate=aggregate, views=None)
    results[f"ensemble_mean_minus_std_views{args.views}"] = evaluate(models, test, aggregate="mean_minus_std", **views)
    for name, r in results.items():
        print(f"{name}: " + ", ".join(f"{a} {t['verdict_pair_accuracy']:.3f} / {t['gain_share'] or 0:.3f}"
                                      for a, t in r.items()), flush=True)  # fmt: skip

    print(f"\n{'reward models':34s} {'aspect':26s} {'verdict':>8s} {'(pairs)':>8s} {'soft':>6s} {'pick':>6s} "
          f"{'random':>6s} {'oracle':>6s} {'share':>6s}")  # fmt: skip
    for name, r in results.items():
        for aspect, t in r.items():
            share = "-" if t.get("gain_share") is None else f"{t['gain_share']:.3f}"
            print(f"{name:34s} {aspect:26s} {t['verdict_pair_accuracy']:8.3f} {t['verdict_pairs']:8d} "
                  f"{t['soft_pair_accuracy']:6.3f} {t['pick_accuracy']:6.3f} {t['random_accuracy']:6.3f} "
                  f"{t['oracle_pick_accuracy']:6.3f} {share:>6s}")  # fmt: skip
    settings = {k: v for k, v in vars(args).items()}
    write_json(Path(args.out), {"settings": settings, "seconds": round(time.time() - started, 1),
                                "training_data": {**counts, "itercomp_pairs": ITERCOMP_PAIRS},
                                "members_val_accuracy": trained, "results": results})  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
