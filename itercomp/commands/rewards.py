"""`itercomp rewards ...`: simulated rankings, training and evaluation of the three composition reward models."""

from __future__ import annotations

from pathlib import Path

from itercomp.commands import subcommands


def register(parser) -> None:
    from itercomp.config import add_config_arguments
    from reward_models.config import AGGREGATES, CONTRAST_NAMES, VIEW_NAMES, RankingDataConfig, RewardTrainConfig

    sub = subcommands(parser)

    p = sub.add_parser(
        "make-data",
        help="simulate rankings in the shapes world (true renders, hard negatives, noisy versions; oracle-ranked)",
        description="Writes <output_dir>/images/ and <output_dir>/rankings.jsonl. Flags are the fields of "
        "RankingDataConfig.",
    )
    add_config_arguments(p, RankingDataConfig)
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
    p.add_argument(
        "--models", type=Path, nargs="+", required=True, help="folders holding <aspect>/ subfolders, or one ensemble"
    )
    p.add_argument(
        "--output-dir", type=Path, required=True, deprecated=("--out",), help="e.g. itercomp/weights/rewards"
    )
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16 storage, loaded as fp32)")
    p.set_defaults(func=export)

    p = sub.add_parser(
        "eval",
        help="pairwise accuracy per aspect on held-out rankings (and agreement with the oracle)",
        description="Per aspect: pair accuracy on the rankings' pairs; with the shapes oracle, agreement with it and, "
        "where a ranking holds several seeds of one generator, same-model pair accuracy (pairs whose oracle "
        "verdicts differ, and pairs whose soft scores differ) and best-of-N: the oracle accuracy of the reward's "
        "pick of N seeds against a random seed and the oracle's pick.",
    )
    p.add_argument(
        "--models",
        type=Path,
        nargs="+",
        required=True,
        help="folder with one reward model subfolder per aspect, an ensemble folder (ensemble.json), or several "
        "folders (an ensemble of them)",
    )
    p.add_argument(
        "--aggregate", choices=AGGREGATES, default=None, help="how an ensemble combines its members (default: its own)"
    )
    p.add_argument("--spread-weight", type=float, default=None, help="mean_minus_std: weight of the members' std")
    p.add_argument(
        "--contrast", choices=CONTRAST_NAMES, default=None, help="score relative to the prompt's one-edit variants"
    )
    p.add_argument(
        "--views", choices=VIEW_NAMES, default=None, help="average each reward over exact symmetries of the world"
    )
    p.add_argument("--view-count", type=int, default=None, help="how many views (default: the ensemble's, 12)")
    p.add_argument("--best-of", type=int, default=4, help="N of the best-of-N pick among one generator's seeds")
    p.add_argument("--rankings", type=Path, required=True, help="rankings.jsonl to evaluate on")
    p.add_argument(
        "--split", choices=("train", "val", "test", "all"), default="test", help="prompt split (default test)"
    )
    p.add_argument("--aspects", nargs="+", default=None, help="default: every aspect with a model in --models")
    p.add_argument("--no-oracle", action="store_true", help="skip agreement with the shapes oracle")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.set_defaults(func=evaluate)


def make_data(args) -> None:
    from itercomp.config import config_from_namespace
    from reward_models.config import RankingDataConfig
    from reward_models.simulate import make_rankings

    path = make_rankings(config_from_namespace(RankingDataConfig, args))
    print(f"wrote {path}")


def train(args) -> None:
    from itercomp.config import config_from_namespace
    from reward_models.config import RewardTrainConfig
    from reward_models.training import train as run

    run(config_from_namespace(RewardTrainConfig, args))


def evaluate(args) -> None:
    from itercomp.errors import ItercompError
    from itercomp.io import write_json
    from itercomp.rankings import RankingFile
    from itercomp.world import REWARD_ASPECTS
    from reward_models.ensemble import RewardEnsemble, read_ensemble
    from reward_models.evaluation import evaluate_rankings

    data = RankingFile.read(args.rankings)
    folders = args.models
    members = read_ensemble(folders[0])[0] if len(folders) == 1 else folders
    present = [a for a in REWARD_ASPECTS if all((m / a / "config.json").is_file() for m in members)]
    aspects = args.aspects or present
    if not aspects:
        raise ItercompError(
            f"no reward models under {', '.join(map(str, folders))}; expected <folder>/<aspect>/config.json"
        )
    missing = [a for a in aspects if a not in present]
    if missing:
        raise ItercompError(
            f"no reward model for {', '.join(missing)} in {', '.join(map(str, members))}; train it with "
            "'itercomp rewards train'"
        )
    split = None if args.split == "all" else args.split
    options = {k: v for k, v in (("aggregate", args.aggregate), ("spread_weight", args.spread_weight),
                                 ("contrast", args.contrast), ("views", args.views), ("view_count", args.view_count))
               if v is not None}  # fmt: skip
    path = folders[0] if len(folders) == 1 else [str(f) for f in folders]
    results = {}
    for aspect in aspects:
        rankings = data.select(aspect, split)
        if not rankings:
            raise ItercompError(f"{args.rankings} has no {aspect} rankings in split {args.split}")
        ensemble = RewardEnsemble.from_pretrained(path, aspects=(aspect,), **options).eval()
        # One plain member scores raw (as it was trained); otherwise the ensemble's own call.
        plain = ensemble.members == 1 and ensemble.contrast is None and ensemble.views is None
        model = ensemble.models[aspect] if plain else _AspectCall(ensemble, aspect)
        results[aspect] = evaluate_rankings(model, rankings, data.root, oracle=not args.no_oracle, best_of=args.best_of)
        r = results[aspect]
        line = f"{aspect:26s} {r['rankings']:5d} rankings {r['pairs']:6d} pairs  pair accuracy {r['pair_accuracy']:.3f}"
        if r.get("oracle_agreement") is not None:
            line += f"  oracle agreement {r['oracle_agreement']:.3f} ({r['oracle_pairs']} pairs)"
        print(line)
        same = r.get("same_model")
        if same:
            print(f"{'':26s} same model: {same['groups']} prompts; {_fmt(same['verdict_pair_accuracy'])} on "
                  f"{same['verdict_pairs']} pairs whose verdicts differ, {_fmt(same['soft_pair_accuracy'])} on "
                  f"{same['soft_pairs']} whose soft scores differ")  # fmt: skip
            if same.get("pick_groups"):
                print(f"{'':26s} best of {same['best_of']} ({same['pick_groups']} prompts): reward pick "
                      f"{_fmt(same['pick_accuracy'])}, random seed {_fmt(same['random_accuracy'])}, oracle pick "
                      f"{_fmt(same['oracle_pick_accuracy'])}; gain share {_fmt(same['gain_share'])}")  # fmt: skip
    if args.out:
        write_json(
            args.out,
            {"models": [str(f) for f in folders], "rankings": str(args.rankings), "split": args.split,
             "options": options, "results": results},
        )  # fmt: skip


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


class _AspectCall:
    """One aspect of a RewardEnsemble as a scorer: `score(images, prompts)` and the image size to load at."""

    def __init__(self, ensemble, aspect: str):
        self.ensemble, self.aspect = ensemble, aspect
        self.config = ensemble.models[aspect].config

    def eval(self):
        self.ensemble.eval()
        return self

    def score(self, images, prompts):
        return self.ensemble(images, prompts)[self.aspect]


def export(args) -> None:
    import shutil

    import torch

    from itercomp.errors import ItercompError
    from itercomp.io import write_json
    from itercomp.world import REWARD_ASPECTS
    from reward_models.ensemble import ENSEMBLE_FILE, read_ensemble
    from reward_models.model import RewardModel

    members, spec = read_ensemble(args.models[0]) if len(args.models) == 1 else (args.models, None)
    if spec is not None:
        # An ensemble folder: every member is exported, and ensemble.json with them.
        names = [m.relative_to(args.models[0]).as_posix() for m in members]
        jobs = [(m, args.output_dir / name) for m, name in zip(members, names)]
        spec = {"members": names, **spec}
    else:
        jobs = [(folder, args.output_dir) for folder in args.models]
    found = [
        (a, folder / a, out / a)
        for folder, out in jobs
        for a in REWARD_ASPECTS
        if (folder / a / "config.json").is_file()
    ]
    if not found:
        raise ItercompError(f"no reward models under {', '.join(map(str, args.models))}; expected <folder>/<aspect>/")
    for aspect, source, target in found:
        model = RewardModel.from_pretrained(source)
        # fp16 storage halves the files; from_pretrained loads them back into the fp32 model.
        (model if args.fp32 else model.to(torch.float16)).save_pretrained(target)
        if (source / "train_state.json").is_file():
            shutil.copy(source / "train_state.json", target / "train_state.json")
        print(f"{aspect}: {source} -> {target}")
    if spec is not None:
        write_json(args.output_dir / ENSEMBLE_FILE, spec)
