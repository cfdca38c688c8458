"""Score folders of images against prompt files with the oracle — every model is evaluated through this.

File naming: an image belongs to the prompt whose id starts its file name (`<prompt_id>.png`,
`<prompt_id>_<anything>.png` or `<prompt_id>-<anything>.png`, as `world sample` and `gallery generate` write),
or, T2I-CompBench style, whose text does (`<prompt text>_<number>.png`). Ids and texts are matched for any
prompt, the shapes world's or not (`itercomp.prompts.generic_prompt_id`, `text_key`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from itercomp.errors import ItercompError, PromptError
from itercomp.prompts import generic_prompt_id, read_prompt_file, text_key
from itercomp.world.oracle import score
from itercomp.world.scene import parse, prompt_id

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def load_prompts(path) -> list[dict]:
    """Prompts from a JSONL file (`prompt`, optional `id` and `aspect`) or a text file, one prompt per line."""
    rows = read_prompt_file(path)
    out = []
    for number, row in enumerate(rows, 1):
        try:
            scene = parse(row["prompt"])
        except PromptError as e:
            raise ItercompError(f"{path}:{number}: {e}") from None
        out.append(
            {
                "id": row.get("id") or prompt_id(row["prompt"]),
                "prompt": row["prompt"],
                "aspect": row.get("aspect") or scene.aspect,
            }
        )
    return out


def match_images(prompts: list[dict], folder) -> tuple[list[tuple[dict, Path]], list[Path]]:
    """Pair every image file in `folder` with its prompt by file name; returns (pairs, unmatched files).

    A prompt answers to its row's `id` (if any), to `generic_prompt_id` of its text and, in T2I-CompBench's
    naming, to its text up to case and spacing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ItercompError(f"image folder not found: {folder}")
    by_id, by_text = {}, {}
    for p in prompts:
        for key in (p.get("id"), generic_prompt_id(p["prompt"])):
            if key:
                by_id.setdefault(key, p)
        by_text.setdefault(text_key(p["prompt"]), p)
    pairs, unmatched = [], []
    for file in sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES):
        stem = file.stem
        key = re.split(r"[_-]", stem, maxsplit=1)[0]
        match = by_id.get(key) or by_text.get(text_key(re.sub(r"_\d+$", "", stem)))
        if match is None:
            unmatched.append(file)
        else:
            pairs.append((match, file))
    return pairs, unmatched


def score_folder(prompts: list[dict], folder) -> dict:
    """Oracle verdicts for every image in the folder, with per-aspect accuracy and mean soft score."""
    pairs, unmatched = match_images(prompts, folder)
    if not pairs:
        raise ItercompError(
            f"no image in {folder} matches a prompt: name files '<prompt_id>_<seed>.png' (ids from the prompts "
            f"file) or '<prompt text>_<number>.png'"
        )
    images = []
    for prompt, file in pairs:
        verdict = score(Image.open(file), prompt["prompt"])
        images.append({"path": str(file), "prompt_id": prompt["id"], "aspect": prompt["aspect"], **verdict.to_dict()})
    return {
        "summary": summarize(images),
        "predicates": predicate_failures(images),
        "unmatched": [str(f) for f in unmatched],
        "images": images,
    }


def summarize(images: list[dict]) -> dict:
    groups = defaultdict(list)
    for row in images:
        groups[row["aspect"]].append(row)
    return {
        aspect: {
            "n": len(rows),
            "accuracy": sum(r["correct"] for r in rows) / len(rows),
            "mean_score": sum(r["score"] for r in rows) / len(rows),
        }
        for aspect, rows in sorted(groups.items())
    }


def coverage(image) -> float:
    """The share of an image's pixels that are not background (any channel above 20 of 255): ground-truth renders
    of the test prompts cover about 0.13 (binding), a model that paints its objects too large covers more."""
    return float((np.asarray(image).max(-1) > 20).mean())


def object_failures(verdict) -> list[tuple[str, ...]]:
    """Per object of the prompt, what keeps it from being drawn as asked (the oracle's per-object predicates,
    "<color> <shape>: ..."): ("present",) when no blob has its colour, else the failing ones of "shape", "fill" and
    "size", sorted; () when it is drawn as asked."""
    objects: dict[str, set[str]] = {}
    for predicate in verdict.predicates:
        if ": " in predicate.name:
            name, what = predicate.name.split(": ", 1)
            failing = objects.setdefault(name, set())
            if not predicate.ok:
                failing.add(what.split()[0])
    return [("present",) if "present" in f else tuple(sorted(f)) for f in objects.values()]


def objects_drawn(verdict) -> list[bool]:
    """Per object of the prompt, whether it is drawn as asked: present in its colour, with every shape, fill and
    size word of the prompt holding."""
    return [not failing for failing in object_failures(verdict)]


def object_misses(verdict) -> dict[str, int]:
    """How many of the prompt's objects fail on each predicate kind ("present", "shape", "fill", "size"; an
    object that fails two counts under both)."""
    return dict(Counter(kind for failing in object_failures(verdict) for kind in failing))


def predicate_kind(name: str) -> str:
    """What a predicate checks, without the objects: 'red circle: shape circle' -> 'shape circle',
    'red circle: present' -> 'present', 'red circle to the left of blue square' -> 'to the left of'."""
    if ": " in name:
        return name.split(": ", 1)[1]
    return " ".join(name.split()[2:-2])


def predicate_failures(images: list[dict]) -> dict:
    """Per predicate kind: how often it is checked, how often it fails, and in how many images it is the only
    failure (fixing it alone would make the image correct). Sorted by failures, most first."""
    table = defaultdict(lambda: {"checked": 0, "failed": 0, "sole_failure": 0})
    for image in images:
        failed = [predicate_kind(p["name"]) for p in image["predicates"] if not p["ok"]]
        for p in image["predicates"]:
            table[predicate_kind(p["name"])]["checked"] += 1
        for kind in failed:
            table[kind]["failed"] += 1
        if len(failed) == 1:
            table[failed[0]]["sole_failure"] += 1
    return dict(sorted(table.items(), key=lambda kv: (-kv[1]["failed"], kv[0])))


def format_predicates(predicates: dict, top: int = 12) -> str:
    lines = [f"{'predicate':<26} {'checked':>7} {'failed':>7} {'only failure':>12}"]
    for kind, row in list(predicates.items())[:top]:
        share = row["failed"] / row["checked"]
        lines.append(f"{kind:<26} {row['checked']:>7} {share:>7.0%} {row['sole_failure']:>12}")
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    lines = [f"{'aspect':<26} {'images':>6} {'accuracy':>9} {'score':>7}"]
    for aspect, s in summary.items():
        lines.append(f"{aspect:<26} {s['n']:>6} {s['accuracy']:>9.1%} {s['mean_score']:>7.3f}")
    return "\n".join(lines)
