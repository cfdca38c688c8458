"""`itercomp world ...`: prompts, ground-truth samples and oracle scoring for the shapes world."""

from __future__ import annotations

from pathlib import Path

from itercomp.commands import subcommands
from itercomp.world.vocab import ASPECTS, SPLITS


def register(parser) -> None:
    sub = subcommands(parser)

    p = sub.add_parser("prompts", help="print prompts of one aspect and split, one per line")
    p.add_argument("--aspect", choices=ASPECTS, required=True)
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("-n", type=int, default=10, help="how many prompts (default 10)")
    p.add_argument("--seed", type=int, default=0, help="which deterministic draw of prompts (default 0)")
    p.set_defaults(func=prompts)

    p = sub.add_parser("sample", help="render ground-truth images, write prompts.jsonl and a grid picture")
    p.add_argument("--aspect", choices=(*ASPECTS, "all"), default="all")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("-n", type=int, default=8, help="prompts per aspect (default 8)")
    p.add_argument("--images-per-prompt", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--canvas", type=int, default=32, choices=(32, 48, 64), help="image size in pixels")
    p.add_argument("--output-dir", type=Path, required=True, deprecated=("--out",), help="output folder")
    p.set_defaults(func=sample)

    p = sub.add_parser("score", help="score a folder of images against prompts with the oracle")
    p.add_argument("--prompts", type=Path, required=True, help="prompts.jsonl or a .txt file, one prompt per line")
    p.add_argument("--images", type=Path, required=True, help="folder of images named '<prompt_id>_<seed>.png'")
    p.add_argument("--out", type=Path, required=True, help="where to write per-image verdicts (JSON)")
    p.set_defaults(func=score)


def prompts(args) -> None:
    from itercomp.world.prompts import generate_prompts

    for text in generate_prompts(args.aspect, args.split, args.n, seed=args.seed):
        print(text)


def sample(args) -> None:
    from tqdm import tqdm

    from itercomp.grid import make_grid
    from itercomp.io import atomic_open, save_png, write_jsonl
    from itercomp.world.prompts import generate_prompts
    from itercomp.world.render import render
    from itercomp.world.scene import prompt_id

    aspects = ASPECTS if args.aspect == "all" else (args.aspect,)
    rows, images, captions = [], [], []
    jobs = [(a, p) for a in aspects for p in generate_prompts(a, args.split, args.n, seed=args.seed)]
    for aspect, text in tqdm(jobs, desc="render", unit="prompt"):
        pid = prompt_id(text)
        rows.append({"id": pid, "prompt": text, "aspect": aspect, "split": args.split})
        for k in range(args.images_per_prompt):
            seed = args.seed * 1000 + k
            image = render(text, seed, canvas=args.canvas)
            save_png(args.output_dir / "images" / f"{pid}_s{seed}.png", image)
            images.append(image)
            captions.append(text)
    write_jsonl(args.output_dir / "prompts.jsonl", rows)
    columns = min(8, args.n * args.images_per_prompt) if len(aspects) > 1 else 8
    with atomic_open(args.output_dir / "grid.png", "wb") as f:
        make_grid(images, captions, columns=columns).save(f, format="PNG")
    print(f"wrote {len(images)} images, {args.output_dir / 'prompts.jsonl'} and {args.output_dir / 'grid.png'}")


def score(args) -> None:
    from itercomp.io import write_json
    from itercomp.world.evaluate import format_predicates, format_summary, load_prompts, score_folder

    report = score_folder(load_prompts(args.prompts), args.images)
    write_json(args.out, report)
    print(format_summary(report["summary"]))
    print("\nwhat fails (per predicate kind; 'only failure': images that this predicate alone makes wrong)")
    print(format_predicates(report["predicates"]))
    if report["unmatched"]:
        print(f"{len(report['unmatched'])} images matched no prompt (listed under 'unmatched' in {args.out})")
    print(f"per-image verdicts: {args.out}")
