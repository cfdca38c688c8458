"""Benchmark: reward models trained on simulated rankings of the default gallery, checked on test prompts.

    python bench/rewards_gallery.py          # 300/40/60 prompts per aspect; 10.8 min on 2 free CPU cores
    python bench/rewards_gallery.py --prompts-train 12 --prompts-val 4 --prompts-test 4 --work /tmp/rg --epochs 2

Every stage goes through the code a user runs, with the settings the loop (`itercomp iterate`) uses:

1. gallery    `itercomp gallery generate --prompts PROMPTS.jsonl` (under `accelerate launch --num_processes JOBS`
              when --jobs > 1) renders train, val and test-split prompts of the three reward aspects with every
              member of `gallery/shapes.yaml`: the DiTs base, pooled and last_layer from itercomp/weights and the
              three procedural members; no member may be skipped.
2. rankings   `annotation_app.tasks.tasks_from_gallery` (one task per prompt for its own aspect, as IterComp),
              `annotation_app.simulate.simulate` with the loop's defaults (IterateConfig: simulated annotators,
              Plackett-Luce temperature, overlap), `annotation_app.interchange.export` -> rankings.jsonl.
3. rewards    `itercomp rewards train --config recipes/configs/rewards_shapes.yaml --rankings ... --aspects A
              --batch_rankings 4 --learning_rate 0.001` from scratch, or with `--init-from DIR` refining the
              models in DIR (the loop refines the shipped ones: --init-from itercomp/weights/rewards); one process
              per aspect, JOBS at a time; further flags this script does not know are passed on (e.g. `--epochs 20`).
4. eval       `itercomp rewards eval --models ... --rankings ... --split test`: per aspect, pairwise accuracy
              against the annotators' rankings and agreement with the oracle's noise-free ranking (every pair of
              a ranking's candidates whose oracle soft scores differ; exact ties give no pair) on test prompts.
              Also reported, from the same rewards and oracle scores: agreement by oracle score gap, by the kind
              of pair (DiT or procedural images), the simulated annotators' own agreement with the oracle, and the
              shipped reward models on the same test rankings (a reference).

Stages are resumable: a stage that finished (its `done.json` in --work matches the settings) is skipped and its
recorded time is reported; the gallery renders only missing images; a reward model whose `train_state.json`
exists is kept. Prints the tables and writes everything to --out (JSON).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from itercomp.io import read_json, replace_dir, write_json
from itercomp.world.vocab import REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]

SPLITS = ("train", "val", "test")
GAPS = (0.0, 0.01, 0.05, 0.1)  # oracle score gaps for the breakdown (0.0: every non-tied pair, the headline)
DIT_MEMBERS = ("base", "pooled", "last_layer")
# On top of recipes/configs/rewards_shapes.yaml (tuned for 1600 make-data rankings): a few hundred gallery rankings
# give few steps per epoch at 16 rankings per batch; 4 per batch at half the learning rate was ~+0.01 oracle
# agreement on spatial_relationship over seeds (docs/rewards.md). Flags given to this script come after these.
DEFAULT_TRAIN_FLAGS = ["--batch_rankings", "4", "--learning_rate", "0.001"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--prompts-train", type=int, default=300, help="train-split prompts per aspect")
    parser.add_argument("--prompts-val", type=int, default=40, help="val-split prompts per aspect")
    parser.add_argument("--prompts-test", type=int, default=60, help="test-split prompts per aspect")
    parser.add_argument("--images-per-prompt", type=int, default=1, help="seeds per prompt and gallery member")
    parser.add_argument("--gallery", default="shapes", help="gallery YAML or shipped name (default: shapes)")
    parser.add_argument("--config", type=Path, default=ROOT / "recipes" / "configs" / "rewards_shapes.yaml")
    parser.add_argument("--seed", type=int, default=0, help="prompt draw, gallery seeds, annotators")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="processes: the gallery renders under `accelerate launch --num_processes JOBS`, and JOBS aspects train "
        "at a time (results do not depend on it; default 2, one per core)",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-rewards-gallery", help="work folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rewards_gallery.json")
    parser.add_argument("--fresh", action="store_true", help="delete --work first (no resuming)")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="refine these reward models (<dir>/<aspect>/) on the gallery rankings instead of training from "
        "scratch, as `itercomp iterate` does with the shipped ones (e.g. itercomp/weights/rewards)",
    )
    args, train_flags = parser.parse_known_args(argv)
    for name in ("prompts_train", "prompts_val", "prompts_test", "images_per_prompt", "jobs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(f in ("--init_from", "--rankings", "--output_dir", "--aspects", "--config") for f in train_flags):
        parser.error(
            "--init_from/--rankings/--output_dir/--aspects/--config are set by the benchmark (use --init-from)"
        )
    if args.init_from is not None:
        missing = [a for a in REWARD_ASPECTS if not (args.init_from / a / "config.json").is_file()]
        if missing:
            parser.error(f"--init-from {args.init_from}: no reward model for {missing} (expected <dir>/<aspect>/)")
        train_flags = ["--init_from", str(args.init_from.resolve()), *train_flags]
    args.train_flags = [*DEFAULT_TRAIN_FLAGS, *train_flags]
    return args


def stage_done(folder: Path, key: dict) -> dict | None:
    path = folder / "done.json"
    if path.is_file():
        done = read_json(path)
        if done.get("key") == key:
            return done
    return None


def run_stage(name: str, folder: Path, key: dict, fn, timings: dict) -> dict:
    done = stage_done(folder, key)
    if done is not None:
        print(f"==== {name}: done earlier ({done['seconds']:.0f} s), skipped ====", flush=True)
        timings[name] = {"seconds": done["seconds"], "resumed": True}
        return done["summary"]
    print(f"==== {name} ====", flush=True)
    start = time.perf_counter()
    summary = fn()
    seconds = round(time.perf_counter() - start, 1)
    write_json(folder / "done.json", {"key": key, "seconds": seconds, "summary": summary})
    timings[name] = {"seconds": seconds, "resumed": False}
    return summary


# ---- stages ---------------------------------------------------------------------------------------------------


def prompts_for(args) -> list[dict]:
    from gallery import world_prompts

    sizes = {"train": args.prompts_train, "val": args.prompts_val, "test": args.prompts_test}
    return [p for a in REWARD_ASPECTS for s in SPLITS for p in world_prompts(a, s, sizes[s], seed=args.seed)]


def launcher(args, module_args: list[str]) -> list[str]:
    """`python -m itercomp.cli ...`, or under `accelerate launch` with --jobs CPU processes."""
    if args.jobs == 1:
        return [sys.executable, "-m", "itercomp.cli", *module_args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(args.jobs),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "itercomp.cli", *module_args]  # fmt: skip


def child_env(args) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}  # fmt: skip


def render(args, folder: Path) -> dict:
    from itercomp.io import write_jsonl

    prompts_file = args.work / "prompts.jsonl"
    write_jsonl(prompts_file, prompts_for(args))
    cmd = launcher(args, ["gallery", "generate", "--gallery", args.gallery, "--prompts", str(prompts_file),
                          "--images-per-prompt", str(args.images_per_prompt), "--seed", str(args.seed),
                          "--out", str(folder)])  # fmt: skip
    print(shlex.join(cmd), flush=True)
    subprocess.run(cmd, env=child_env(args), check=True, cwd=ROOT)
    summary = read_json(folder / "run.json")
    return {
        "command": shlex.join(cmd),
        "members": [m["name"] for m in summary["members"]],
        "skipped_members": summary["skipped_members"],
        "prompts": summary["prompts"],
        "images": summary["images"],
        "rendered_now": summary["rendered"],
        "processes": summary["world_size"],
        "render_seconds": summary["seconds"],
        "images_per_second": summary["images_per_second"],
    }


def rank(args, gallery_dir: Path, folder: Path) -> dict:
    from annotation_app.interchange import export
    from annotation_app.simulate import SimulationConfig, simulate
    from annotation_app.store import Store
    from annotation_app.tasks import tasks_from_gallery
    from itercomp.loop.config import IterateConfig

    loop = IterateConfig()  # the loop's defaults for simulated annotators
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    store = Store(str(folder / "annotations.sqlite"))
    try:
        added, _ = store.add_tasks(tasks_from_gallery(gallery_dir, loop.task_aspects), round=1)
        config = SimulationConfig(
            annotators=loop.simulated_annotators, temperature=loop.temperature, overlap=loop.overlap,
            seed=args.seed + 1000, round=1,
        )  # fmt: skip
        result = simulate(store, config)
        exported = export(store, folder / "export", round=1, paths="relative")
    finally:
        store.close()
    return {
        "task_aspects": loop.task_aspects,
        "tasks": added,
        "annotators": config.annotators,
        "temperature": config.temperature,
        "overlap": config.overlap,
        "rankings": result["total"],
        "exported_rankings": exported["rankings"],
        "exported_pairs": exported["pairs"],
        "rankings_file": str((folder / "export" / "rankings.jsonl").relative_to(args.work)),
    }


def train_one(args, aspect: str, rankings: Path, folder: Path) -> str:
    """`itercomp rewards train` for one aspect in its own process (log in <folder>/<aspect>.log)."""
    final = folder / aspect
    if (final / "train_state.json").is_file():  # written last by the trainer
        return f"{aspect}: trained earlier, kept"
    work = folder / ".work" / aspect
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-m", "itercomp.cli", "rewards", "train", "--config", str(args.config),
           "--rankings", str(rankings), "--output_dir", str(work), "--aspects", aspect, *args.train_flags]  # fmt: skip
    print(shlex.join(cmd), flush=True)
    with open(folder / f"{aspect}.log", "w") as log:
        done = subprocess.run(cmd, env=child_env(args), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"itercomp rewards train failed for {aspect}; see {folder / f'{aspect}.log'}")
    replace_dir(work / aspect, final)
    shutil.copy(work / "train_config.yaml", final / "train_config.yaml")
    lines = [line for line in (folder / f"{aspect}.log").read_text().splitlines() if line.startswith(f"[{aspect}]")]
    return "\n".join(lines)


def train_rewards(args, rankings: Path, folder: Path) -> dict:
    """One reward model per aspect from scratch, --jobs aspects at a time (each one process, --threads)."""
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for message in pool.map(lambda a: train_one(args, a, rankings, folder), REWARD_ASPECTS):
            print(message, flush=True)
    shutil.rmtree(folder / ".work", ignore_errors=True)
    keep = ("train_rankings", "train_pairs", "val_rankings", "best_epoch", "best_val_loss", "best_val_accuracy",
            "epochs_run", "seconds", "pairs_per_second")  # fmt: skip
    summaries = {}
    for aspect in REWARD_ASPECTS:
        state = read_json(folder / aspect / "train_state.json")
        summaries[aspect] = {k: state.get(k) for k in keep}
    return summaries


def evaluate(rankings: Path, models: Path, out: Path) -> dict:
    from itercomp.cli import main as itercomp

    argv = ["rewards", "eval", "--models", str(models), "--rankings", str(rankings), "--split", "test",
            "--out", str(out)]  # fmt: skip
    print("itercomp " + shlex.join(argv), flush=True)
    if itercomp(argv) != 0:
        raise SystemExit("itercomp rewards eval failed")
    return read_json(out)["results"]


def breakdown(rankings: Path, models: Path) -> dict:
    """Where the oracle pairs of the test rankings come from and how the models do on each kind: by oracle score
    gap, by which members' images are compared, and how often the simulated annotators agree with the oracle."""
    from itercomp.rankings import RankingFile, ranking_pairs
    from reward_models.evaluation import candidate_rewards, oracle_scores
    from reward_models.model import RewardModel

    data = RankingFile.read(rankings)
    out = {}
    for aspect in REWARD_ASPECTS:
        test = data.select(aspect, "test")
        rewards = candidate_rewards(RewardModel.from_pretrained(models / aspect), test, data.root)
        by_gap = {g: [0.0, 0] for g in GAPS}
        by_kind: dict[str, list] = defaultdict(lambda: [0.0, 0])
        annotator = [0.0, 0]  # the annotators' ranking vs the oracle, on the oracle's non-tied pairs
        ties = 0
        for ranking, r in zip(test, rewards):
            s = oracle_scores(ranking, data.root)
            place = {image_id: k for k, image_id in enumerate(ranking.order)}
            ids = [c.image_id for c in ranking.candidates]
            gens = [c.generator for c in ranking.candidates]
            annotated = set(ranking_pairs(ranking))
            for i, j in itertools.combinations(range(len(s)), 2):
                if s[i] == s[j]:
                    ties += 1
                    continue
                hi, lo = (i, j) if s[i] > s[j] else (j, i)
                right = float(r[hi] > r[lo]) + 0.5 * float(r[hi] == r[lo])
                gap = abs(s[i] - s[j])
                for g in GAPS:
                    if gap >= g:
                        by_gap[g][0] += right
                        by_gap[g][1] += 1
                kind = " vs ".join(sorted("DiT" if gens[k] in DIT_MEMBERS else "procedural" for k in (i, j)))
                by_kind[kind][0] += right
                by_kind[kind][1] += 1
                if (hi, lo) in annotated or (lo, hi) in annotated:
                    annotator[0] += float(place[ids[hi]] < place[ids[lo]])
                    annotator[1] += 1
        out[aspect] = {
            "oracle_tied_pairs_skipped": ties,
            "oracle_agreement_by_min_gap": {
                f">={g}": {"pairs": n, "agreement": c / n if n else None} for g, (c, n) in by_gap.items()
            },
            "oracle_agreement_by_pair_kind": {
                k: {"pairs": n, "agreement": c / n if n else None} for k, (c, n) in sorted(by_kind.items())
            },
            "annotators_vs_oracle": {
                "pairs": annotator[1], "agreement": annotator[0] / annotator[1] if annotator[1] else None
            },
        }  # fmt: skip
    return out


def shipped_reference(rankings: Path) -> dict:
    """The shipped reward models (itercomp/weights/rewards, trained on `itercomp rewards make-data` renders and edits,
    never on gallery images) on the same test rankings: a reference, not part of the claim."""
    from itercomp.loop.config import shipped_rewards
    from itercomp.rankings import RankingFile
    from reward_models.evaluation import evaluate_rankings
    from reward_models.model import RewardModel

    data, folder = RankingFile.read(rankings), shipped_rewards()
    details = breakdown(rankings, folder)
    out = {}
    for aspect in REWARD_ASPECTS:
        result = evaluate_rankings(RewardModel.from_pretrained(folder / aspect), data.select(aspect, "test"), data.root)
        kinds = details[aspect]["oracle_agreement_by_pair_kind"]
        out[aspect] = {**result, "oracle_agreement_by_pair_kind": kinds}
    return out


def oracle_member_scores(gallery_dir: Path) -> dict:
    """Mean oracle soft score and binary accuracy per member on the test prompts (context for the table)."""
    from itercomp.io import read_jsonl
    from itercomp.world import score, split_of
    from reward_models.data import load_image

    acc: dict = defaultdict(lambda: defaultdict(list))
    for row in read_jsonl(gallery_dir / "manifest.jsonl"):
        if row["aspect"] in REWARD_ASPECTS and split_of(row["prompt"]) == "test":
            verdict = score(load_image(gallery_dir / row["path"]), row["prompt"])
            acc[row["generator"]][row["aspect"]].append((verdict.score, verdict.correct))
    return {
        g: {a: {"soft": float(np.mean([v[0] for v in vs])), "correct": float(np.mean([v[1] for v in vs]))}
            for a, vs in per.items()}
        for g, per in acc.items()
    }  # fmt: skip


# ---- main -----------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python bench/rewards_gallery.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    started, load_before = time.perf_counter(), os.getloadavg()
    timings: dict = {}

    sizes = {"train": args.prompts_train, "val": args.prompts_val, "test": args.prompts_test}
    gallery_key = {"gallery": args.gallery, "sizes": sizes, "images_per_prompt": args.images_per_prompt,
                   "seed": args.seed}  # fmt: skip
    gallery_dir = args.work / "gallery"
    gallery = run_stage("gallery", gallery_dir, gallery_key, lambda: render(args, gallery_dir), timings)

    rank_dir = args.work / "rankings"
    rankings_key = {**gallery_key, "stage": "rankings"}
    ranked = run_stage("rankings", rank_dir, rankings_key, lambda: rank(args, gallery_dir, rank_dir), timings)
    rankings_file = args.work / ranked["rankings_file"]

    models = args.work / ("rewards-refined" if args.init_from else "rewards")  # both share gallery and rankings
    train_key = {**rankings_key, "config": str(args.config), "config_text": args.config.read_text(),
                 "flags": args.train_flags}  # fmt: skip
    if stage_done(models, train_key) is None and (models / "done.json").is_file():
        shutil.rmtree(models)  # trained with other settings: start over
    trained = run_stage("rewards", models, train_key, lambda: train_rewards(args, rankings_file, models), timings)

    start = time.perf_counter()
    results = evaluate(rankings_file, models, args.work / "eval.json")
    details = breakdown(rankings_file, models)
    members = oracle_member_scores(gallery_dir)
    shipped = shipped_reference(rankings_file)
    timings["eval"] = {"seconds": round(time.perf_counter() - start, 1), "resumed": False}

    from itercomp.rankings import RankingFile

    data = RankingFile.read(rankings_file)
    per_split = {a: {s: len(data.select(a, s)) for s in SPLITS} for a in REWARD_ASPECTS}
    total = round(sum(t["seconds"] for t in timings.values()), 1)
    report = {
        "command": command,
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "claim": "each aspect's reward model agrees with the oracle on >= 90% of held-out pairs (test-split prompts)",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },  # fmt: skip
        "sizes": {
            "prompts_per_aspect": sizes,
            "images_per_prompt": args.images_per_prompt,
            "members": gallery["members"],
            "images": gallery["images"],
            "rankings_per_aspect": per_split,
            "train_config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
            "train_flags": args.train_flags,
            "init_from": str(args.init_from) if args.init_from else None,
        },
        "gallery": gallery,
        "rankings": ranked,
        "training": trained,
        "seconds": {**{k: v["seconds"] for k, v in timings.items()}, "total": total},
        "resumed_stages": [k for k, v in timings.items() if v["resumed"]],
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
        "results": {
            a: {
                "test_rankings": results[a]["rankings"],
                "pairs": results[a]["pairs"],
                "pair_accuracy": results[a]["pair_accuracy"],
                "oracle_pairs": results[a]["oracle_pairs"],
                "oracle_agreement": results[a]["oracle_agreement"],
                "passes_0.9": results[a]["oracle_agreement"] >= 0.9,
                **details[a],
            }
            for a in REWARD_ASPECTS
        },
        "oracle_per_member_on_test": members,
        "shipped_models_on_the_same_test_rankings": shipped,
        "definitions": {
            "pair_accuracy": "share of the test rankings' ordered (better, worse) pairs that the reward orders the "
            "same way (exact reward ties count 1/2); the rankings are the simulated annotators' (noisy)",
            "oracle_agreement": "share of all candidate pairs of each test ranking whose oracle soft scores differ "
            "(exact ties skipped) that the reward orders like the oracle: reward_models.evaluation.evaluate_rankings",
            "oracle_agreement_by_min_gap": "the same, only on pairs whose oracle scores differ by >= the gap",
        },
    }
    write_json(args.out, report)
    print_table(report)
    print(f"wrote {args.out}")
    return report


def print_table(report: dict) -> None:
    s = report["sizes"]
    print(
        f"\nreward models from scratch on simulated rankings of the {len(s['members'])}-member gallery "
        f"({', '.join(s['members'])}); prompts per aspect {s['prompts_per_aspect']}, "
        f"{s['images_per_prompt']} image(s) per prompt and member"
    )
    header = ("aspect", "train rk", "test rk", "pair acc", "oracle agr", "oracle pairs", "agr gap>=.05", "pairs",
              "annotators=oracle")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for aspect, r in report["results"].items():
        gap = r["oracle_agreement_by_min_gap"][">=0.05"]
        row = (
            aspect, s["rankings_per_aspect"][aspect]["train"], r["test_rankings"], f"{r['pair_accuracy']:.3f}",
            f"**{r['oracle_agreement']:.3f}**", r["oracle_pairs"], f"{gap['agreement']:.3f}", gap["pairs"],
            f"{r['annotators_vs_oracle']['agreement']:.3f}",
        )  # fmt: skip
        print("| " + " | ".join(map(str, row)) + " |")
    print("\noracle agreement by kind of pair (pairs) -- trained here / shipped models (make-data, for reference)")
    kinds = ("DiT vs procedural", "DiT vs DiT", "procedural vs procedural")
    print("| aspect | " + " | ".join(kinds) + " |")
    print("|" + "---|" * (len(kinds) + 1))
    for aspect, r in report["results"].items():
        ours = r["oracle_agreement_by_pair_kind"]
        ref = report["shipped_models_on_the_same_test_rankings"][aspect]["oracle_agreement_by_pair_kind"]
        cells = [f"{ours[k]['agreement']:.3f} / {ref[k]['agreement']:.3f} ({ours[k]['pairs']})" for k in kinds]
        print(f"| {aspect} | " + " | ".join(cells) + " |")
    secs = report["seconds"]
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()))


if __name__ == "__main__":
    main()
