"""`itercomp gallery ...`: render prompts with a gallery of generators; list and validate gallery files."""

from __future__ import annotations

from pathlib import Path

from itercomp.commands import subcommands
from itercomp.world.vocab import ASPECTS, SPLITS

GALLERY_HELP = "gallery YAML file, or a shipped gallery's name: shapes (default), itercomp_paper"


def register(parser) -> None:
    sub = subcommands(parser)

    p = sub.add_parser(
        "generate",
        help="render prompts with every member of a gallery (batched, resumable, multi-process)",
        description="Render each prompt with each member and seed into OUTPUT_DIR/images, write OUTPUT_DIR/manifest.jsonl and a "
        "grid per prompt. Re-running skips finished images. Multi-process: accelerate launch -m itercomp.cli ...",
    )
    p.add_argument("--gallery", default="shapes", help=GALLERY_HELP)
    p.add_argument("--aspect", choices=ASPECTS, help="shapes-world prompts of this aspect (or use --prompts)")
    p.add_argument("--split", choices=SPLITS, default="train", help="prompt split for --aspect (default train)")
    p.add_argument("-n", type=int, default=8, help="how many --aspect prompts (default 8)")
    p.add_argument("--prompt-seed", type=int, default=0, help="which deterministic draw of --aspect prompts")
    p.add_argument(
        "--prompts", type=Path, help="prompt file instead of --aspect: .txt one per line (T2I-CompBench) or .jsonl"
    )
    p.add_argument("--members", help="comma-separated member names to render (default: all)")
    p.add_argument("--skip-unavailable", action="store_true", help="skip members whose weights are not here")
    p.add_argument("--images-per-prompt", type=int, default=1, help="seeds per prompt and member (default 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed; images use seeds SEED..SEED+K-1 (default 0)")
    p.add_argument("--batch-size", type=int, help="override every member's batch size")
    p.add_argument("--no-grids", action="store_true", help="do not draw a grid picture per prompt")
    p.add_argument(
        "--output-dir", type=Path, required=True, deprecated=("--out",), help="output folder (re-use it to resume)"
    )
    p.set_defaults(func=generate)

    p = sub.add_parser("list", help="show a gallery's members, their strengths and weaknesses, and if they can load")
    p.add_argument("--gallery", default="shapes", help=GALLERY_HELP)
    p.set_defaults(func=list_members)

    p = sub.add_parser("validate", help="check gallery YAML files without loading any weights")
    p.add_argument("files", nargs="+", help="gallery YAML files or shipped gallery names")
    p.set_defaults(func=validate)


def _accelerator():
    """One process normally; under `accelerate launch` one per process (CPU runs need cpu=True to connect)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def generate(args) -> None:
    from gallery.run import load_prompt_file, render_gallery, world_prompts
    from gallery.spec import load_gallery
    from itercomp.errors import ItercompError

    if args.n < 1:
        raise ItercompError(f"-n must be >= 1, got {args.n}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ItercompError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.prompts is not None:
        prompts = load_prompt_file(args.prompts, aspect=args.aspect)
    elif args.aspect is not None:
        prompts = world_prompts(args.aspect, args.split, args.n, seed=args.prompt_seed)
    else:
        raise ItercompError("say which prompts to render: --aspect ASPECT [--split --n] or --prompts FILE")
    gallery = load_gallery(args.gallery)
    members = [m.strip() for m in args.members.split(",") if m.strip()] if args.members else None
    render_gallery(
        gallery,
        prompts,
        args.output_dir,
        members=members,
        images_per_prompt=args.images_per_prompt,
        seed=args.seed,
        batch_size=args.batch_size,
        skip_unavailable=args.skip_unavailable,
        grids=not args.no_grids,
        accelerator=_accelerator(),
    )


def list_members(args) -> None:
    from gallery.spec import load_gallery

    gallery = load_gallery(args.gallery)
    print(f"{gallery.name}: {gallery.description.strip()}  ({gallery.source})")
    for spec in gallery.members:
        why = spec.build().unavailable()
        print(f"\n{spec.name}  [type {spec.type}]  {'ready' if why is None else 'unavailable: ' + why}")
        if spec.description:
            print(f"  {spec.description}")
        for label, items in (("+", spec.strengths), ("-", spec.weaknesses)):
            for item in items:
                print(f"  {label} {item}")


def validate(args) -> None:
    from gallery.spec import load_gallery

    for file in args.files:
        gallery = load_gallery(file)
        print(f"ok: {gallery.source}: {len(gallery.members)} members ({', '.join(gallery.names)})")
