"""`itercomp rewards ...`: simulated rankings, training and evaluation of the three composition reward models."""

from __future__ import annotations

from pathlib import Path

from itercomp.commands import subcommands


def register(parser) -> None:
    from reward_models.config import RewardTrainConfig, SimulationConfig, add_config_arguments

    sub = subcommands(parser)

    p = sub.add_parser(
        "make-data",
        help="simulate rankings in the shapes world (true renders, hard negatives, noisy versions; oracle-ranked)",
        description="Writes <out>/images/ and <out>/rankings.jsonl. Flags are the fields of SimulationConfig.",
    )
    add_config_arguments(p, SimulationConfig)
    p.set_defaults(func=make_data)

    p = sub.add_parser(
        "train",
        help="train one reward model per aspect on a rankings.jsonl (the code path of recipes/train_reward_models.py)",
        description="Single process; for several use 'accelerate launch recipes/train_reward_models.py'.",
    )
    add_config_arguments(p, RewardTrainConfig)
    p.set_defaults(func=train)

    p = sub.add_parser(
        "export", help="copy trained reward models (one subfolder per aspect) into one folder, weights stored as fp16"
    )
    p.add_argument("--models", type=Path, nargs="+", required=True, help="folders holding <aspect>/ subfolders")
    p.add_argument("--out", type=Path, required=True, help="e.g. itercomp/weights/rewards")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16 storage, loaded as fp32)")
    p.set_defaults(func=export)

    p = sub.add_parser("eval", help="pairwise accuracy per aspect on held-out rankings (and agreement with the oracle)")
    p.add_argument("--models", type=Path, required=True, help="folder with one reward model subfolder per aspect")
    p.add_argument("--rankings", type=Path, required=True, help="rankings.jsonl to evaluate on")
    p.add_argument(
        "--split", choices=("train", "val", "test", "all"), default="test", help="prompt split (default test)"
    )
    p.add_argument("--aspects", nargs="+", default=None, help="default: every aspect with a model in --models")
    p.add_argument("--no-oracle", action="store_true", help="skip agreement with the shapes oracle")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.set_defaults(func=evaluate)


def make_data(args) -> None:
    from reward_models.config import SimulationConfig, config_from_namespace
    from reward_models.simulate import make_rankings

    path = make_rankings(config_from_namespace(SimulationConfig, args))
    print(f"wrote {path}")


def train(args) -> None:
    from reward_models.config import RewardTrainConfig, config_from_namespace
    from reward_models.training import train as run

    run(config_from_namespace(RewardTrainConfig, args))


def evaluate(args) -> None:
    from itercomp.errors import ItercompError
    from itercomp.io import write_json
    from itercomp.world import REWARD_ASPECTS
    from reward_models.data import RankingFile
    from reward_models.evaluation import evaluate_rankings
    from reward_models.model import RewardModel

    data = RankingFile.read(args.rankings)
    aspects = args.aspects or [a for a in REWARD_ASPECTS if (args.models / a / "config.json").is_file()]
    if not aspects:
        raise ItercompError(f"no reward models under {args.models}; expected {args.models}/<aspect>/config.json")
    split = None if args.split == "all" else args.split
    results = {}
    for aspect in aspects:
        if not (args.models / aspect / "config.json").is_file():
            raise ItercompError(f"no reward model at {args.models / aspect}; train it with 'itercomp rewards train'")
        rankings = data.select(aspect, split)
        if not rankings:
            raise ItercompError(f"{args.rankings} has no {aspect} rankings in split {args.split}")
        model = RewardModel.from_pretrained(args.models / aspect)
        results[aspect] = evaluate_rankings(model, rankings, data.root, oracle=not args.no_oracle)
        r = results[aspect]
        line = f"{aspect:26s} {r['rankings']:5d} rankings {r['pairs']:6d} pairs  pair accuracy {r['pair_accuracy']:.3f}"
        if r.get("oracle_agreement") is not None:
            line += f"  oracle agreement {r['oracle_agreement']:.3f} ({r['oracle_pairs']} pairs)"
        print(line)
    if args.out:
        write_json(
            args.out,
            {"models": str(args.models), "rankings": str(args.rankings), "split": args.split, "results": results},
        )


def export(args) -> None:
    import shutil

    import torch

    from itercomp.errors import ItercompError
    from itercomp.world import REWARD_ASPECTS
    from reward_models.model import RewardModel

    found = {a: folder / a for folder in args.models for a in REWARD_ASPECTS if (folder / a / "config.json").is_file()}
    if not found:
        raise ItercompError(f"no reward models under {', '.join(map(str, args.models))}; expected <folder>/<aspect>/")
    for aspect, source in found.items():
        model = RewardModel.from_pretrained(source)
        # fp16 storage halves the files; from_pretrained loads them back into the fp32 model.
        (model if args.fp32 else model.to(torch.float16)).save_pretrained(args.out / aspect)
        if (source / "train_state.json").is_file():
            shutil.copy(source / "train_state.json", args.out / aspect / "train_state.json")
        print(f"{aspect}: {source} -> {args.out / aspect}")
