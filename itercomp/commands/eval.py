"""`itercomp eval`: score a folder of images, or a round of `itercomp iterate`, with any evaluator; or write the
images in T2I-CompBench's layout for its official scripts."""

from __future__ import annotations

import re
from pathlib import Path

from itercomp.world.vocab import ASPECTS

DESCRIPTION = """\
Score images against their prompts with an evaluator and print, per aspect, the number of images, the mean
score ± its standard error and the accuracy (where the evaluator gives verdicts); per-image rows and the summary
go to --out (JSON). Evaluators: shapes (the shapes world's oracle), t2i_compbench (BLIP-VQA, an open-vocabulary
detector, CLIPScore, 3-in-1; models by hub id or folder), rewards (reward models, path=FOLDER). Options go in
--evaluator-config as a YAML file or KEY=VALUE pairs; docs/evaluation.md lists them.

    itercomp eval --prompts prompts.jsonl --images samples/
    itercomp eval --evaluator t2i_compbench --evaluator-config device=cuda --prompts color_val.txt \\
        --aspect attribute_binding --images samples/ --out color.json
    itercomp eval --run runs/demo --round 2 --evaluator rewards
    itercomp eval --prompts prompts.jsonl --images samples/ --export-t2i-compbench t2i/

Images are matched to prompts by file name: '<prompt_id>_<anything>.png' or T2I-CompBench's
'<prompt text>_<number>.png'. A prompt file is .jsonl (prompt, optional id, aspect, category) or one prompt per
line; prompts of the shapes world know their aspect, others take the row's or --aspect.
"""


def register(parser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--evaluator", metavar="NAME",
        help="shapes, t2i_compbench, rewards, or a class by import path 'package.module:Class' (default: the type "
             "in --evaluator-config's file, else shapes)",
    )  # fmt: skip
    parser.add_argument(
        "--evaluator-config", nargs="+", default=[], metavar="FILE.yaml|KEY=VALUE",
        help="the evaluator's options: a YAML file (may name its type) and/or KEY=VALUE pairs, which win",
    )  # fmt: skip
    parser.add_argument(
        "--prompts", type=Path, metavar="FILE", help="prompts.jsonl or a .txt file, one prompt per line"
    )
    parser.add_argument("--images", type=Path, metavar="DIR", help="folder of images named after their prompts")
    parser.add_argument("--aspect", choices=ASPECTS, help="aspect of the prompts whose row names none")
    parser.add_argument(
        "--run", type=Path, metavar="RUN_DIR", help="an 'itercomp iterate' output folder: score a round's evaluation"
    )
    parser.add_argument("--round", type=int, metavar="K", help="which round of --run (default: the last one evaluated)")
    parser.add_argument(
        "--out", type=Path, metavar="FILE",
        help="where to write per-image rows and the summary (JSON; default: scores_<evaluator>.json in the image "
             "folder, or in the round's eval/ folder)",
    )  # fmt: skip
    parser.add_argument(
        "--export-t2i-compbench", type=Path, metavar="OUT_DIR",
        help="instead of scoring, write the images as OUT_DIR/<category>/samples/<prompt>_<index>.png for "
             "T2I-CompBench's scripts",
    )  # fmt: skip
    parser.set_defaults(func=evaluate)


def evaluator_spec(name: str | None, options: list[str]) -> dict:
    """{"type": ..., **options} from --evaluator and --evaluator-config (YAML files first, then KEY=VALUE)."""
    from itercomp.config import merge_values, parse_overrides, read_yaml

    spec: dict = {}
    pairs = []
    for item in options:
        if "=" not in item:
            spec = merge_values(spec, read_yaml(item))
        else:
            pairs.append(item)
    spec = merge_values(spec, parse_overrides(pairs, "--evaluator-config"))
    spec["type"] = name or spec.get("type") or "shapes"
    return spec


def run_entries(run: Path, k: int | None) -> tuple[int, list[dict]]:
    """(round, entries) of a run's evaluation images: <run>/round_<k>/eval/images/<prompt_id>_s<seed>.png, with
    prompt and aspect from rows.jsonl beside them."""
    from itercomp.errors import ItercompError
    from itercomp.io import read_jsonl
    from itercomp.loop.layout import RunLayout
    from itercomp.loop.report import eval_image_name

    layout = RunLayout(run)
    if k is None:
        evaluated = [int(m.group(1)) for p in run.glob("round_*/eval/rows.jsonl")
                     if (m := re.fullmatch(r"round_(\d+)", p.parent.parent.name))]  # fmt: skip
        if not evaluated:
            raise ItercompError(f"no evaluated round in {run}; pass an 'itercomp iterate' output folder as --run")
        k = max(evaluated)
    folder = layout.stage(k, "eval")
    if not (folder / "rows.jsonl").is_file():
        raise ItercompError(f"{folder / 'rows.jsonl'} not found: round {k} of {run} has no evaluation; check --round")
    entries = []
    for row in read_jsonl(folder / "rows.jsonl"):
        path = folder / "images" / eval_image_name(row["prompt_id"], row["seed"])
        if not path.is_file():
            raise ItercompError(f"{path} is missing; resume the run ('itercomp iterate --resume') to redo round {k}")
        entries.append({"path": str(path), "prompt_id": row["prompt_id"], "prompt": row["prompt"],
                        "aspect": row["aspect"], "seed": row["seed"]})  # fmt: skip
    return k, entries


def evaluate(args) -> int:
    from itercomp.errors import ItercompError
    from itercomp.evaluation import format_summary, summarize_rows
    from itercomp.evaluation.files import export_t2i_compbench, folder_entries, load_prompt_rows, score_entries
    from itercomp.io import write_json

    if (args.run is None) == (args.prompts is None or args.images is None):
        raise ItercompError("give either --prompts FILE and --images DIR, or --run RUN_DIR [--round K]")
    unmatched: list[str] = []
    if args.run is not None:
        from itercomp.loop.layout import RunLayout

        k, entries = run_entries(args.run, args.round)
        source = {"run": str(args.run), "round": k}
        default_folder = RunLayout(args.run).stage(k, "eval")
    else:
        entries, unmatched = folder_entries(load_prompt_rows(args.prompts, args.aspect), args.images)
        source = {"prompts": str(args.prompts), "images": str(args.images)}
        default_folder = args.images
    if not entries:
        raise ItercompError(
            f"no image in {args.images} matches a prompt of {args.prompts}: name files '<prompt_id>_<seed>.png' or "
            "'<prompt text>_<number>.png'"
        )

    if args.export_t2i_compbench is not None:
        counts = export_t2i_compbench(entries, args.export_t2i_compbench)
        for category, n in counts.items():
            print(f"{n:>6} images -> {args.export_t2i_compbench / category / 'samples'}")
        return 0

    spec = evaluator_spec(args.evaluator, args.evaluator_config)
    if spec["type"] == "rewards" and "path" not in spec and args.run is not None:
        from itercomp.loop.layout import RunLayout

        spec["path"] = str(RunLayout(args.run).stage(source["round"], "rewards"))  # the round's own reward models
    from itercomp.loop.evaluation import load_evaluator

    evaluator = load_evaluator(spec)
    prompts = len({e["prompt"] for e in entries})
    print(f"scoring {len(entries)} images of {prompts} prompts with {evaluator.name}, {evaluator.batch_size} per batch")
    rows = score_entries(evaluator, entries)
    summary = summarize_rows(rows)
    name = re.sub(r"\W+", "_", evaluator.name)
    out = args.out or default_folder / f"scores_{name}.json"
    write_json(out, {"evaluator": evaluator.spec(), "source": source, "summary": summary, "unmatched": unmatched,
                     "rows": rows})  # fmt: skip
    print(format_summary(summary))
    if unmatched:
        print(f"{len(unmatched)} images matched no prompt (listed under 'unmatched' in {out})")
    print(f"per-image rows: {out}")
    return 0
