"""`itercomp expand`: a round's last stage by hand. A model (a gallery member, optionally pointed at another
pipeline folder, e.g. a round's fine-tuned model) renders every prompt of a rankings file, and its images are
inserted into each ranking where the reward models find them most likely (docs/iterate.md, the insertion rule)."""

from __future__ import annotations

from pathlib import Path

EPILOG = """
example (round 1 of a run, as the loop does it):
    itercomp expand --gallery shapes --member base --model runs/demo/round_1/model/pipeline \\
        --rankings runs/demo/round_1/rankings/rankings.jsonl --rewards runs/demo/round_1/rewards \\
        --output-dir runs/demo/round_1/expand --round 2
"""


def register(parser) -> None:
    parser.description = (
        "Render every ranked prompt with one model and insert its images into each ranking with the reward models; "
        "writes <output-dir>/gallery/, scores.json (the cache: a rerun scores only what is missing) and rankings.jsonl."
    )
    parser.epilog = EPILOG
    parser.add_argument("--gallery", default="shapes", help="gallery YAML or shipped name holding --member")
    parser.add_argument("--member", required=True, help="the gallery member that renders (its pipeline and call)")
    parser.add_argument("--model", help="render with this pipeline folder instead of the member's own model")
    parser.add_argument(
        "--name", help="the new images' generator name (default: --member, or <member>_new with --model)"
    )
    parser.add_argument("--rankings", type=Path, required=True, help="rankings.jsonl to grow")
    parser.add_argument("--rewards", type=Path, required=True, help="folder of <aspect>/ reward models")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the images and grown rankings go")
    parser.add_argument("--images-per-prompt", type=int, default=1, help="seeds per prompt (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--round", type=int, default=0, help="round recorded on the grown rankings (default 0)")
    parser.add_argument("--annotator", default="reward_model:expand", help="annotator prefix of the grown rankings")
    parser.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from gallery import load_gallery
    from itercomp.errors import ItercompError
    from itercomp.loop.expansion import expand

    if not args.rankings.is_file():
        raise ItercompError(f"--rankings {args.rankings}: no such file; give a rankings.jsonl (e.g. a round's)")
    missing = [a for a in ("attribute_binding", "spatial_relationship", "non_spatial_relationship")
               if not (args.rewards / a / "config.json").is_file()]  # fmt: skip
    if missing:
        raise ItercompError(f"--rewards {args.rewards} has no reward model for {', '.join(missing)}; give a folder "
                            "with <aspect>/config.json subfolders")  # fmt: skip
    member = load_gallery(args.gallery).select([args.member])[0]
    if args.model:
        if not hasattr(member.config, "model"):
            raise ItercompError(f"--model needs a `type: diffusers` member; {args.member!r} is {member.type!r}")
        member = replace(member, name=args.name or f"{member.name}_new",
                         config=replace(member.config, model=str(Path(args.model).resolve())))  # fmt: skip
    elif args.name:
        member = replace(member, name=args.name)
    summary = expand(
        member, args.rankings, args.rewards, args.output_dir, images_per_prompt=args.images_per_prompt,
        seed=args.seed, annotator=args.annotator, round=args.round,
    )  # fmt: skip
    for aspect, stats in summary["per_aspect"].items():
        position = stats["mean_relative_position"]
        print(f"{aspect:<26} {stats['inserted']:>4} images into {stats['rankings']:>4} rankings, mean position "
              f"{position:.2f} (0 top, 1 bottom)" if position is not None else f"{aspect}: none inserted")  # fmt: skip
    print(f"grown rankings: {args.output_dir / 'rankings.jsonl'}")
    return 0
