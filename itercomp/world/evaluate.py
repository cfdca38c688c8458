"""Score folders of images against prompt files with the oracle — every model is evaluated through this.

File naming: an image belongs to the prompt whose id starts its file name (`<prompt_id>.png`,
`<prompt_id>_<anything>.png` or `<prompt_id>-<anything>.png`, as `world sample` and `gallery generate` write),
or, T2I-CompBench style, whose text does (`<prompt text>_<number>.png`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from PIL import Image

from itercomp.errors import ItercompError, PromptError
from itercomp.io import read_jsonl
from itercomp.world.oracle import score
from itercomp.world.scene import parse, prompt_id

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def load_prompts(path) -> list[dict]:
    """Prompts from a JSONL file (`prompt`, optional `id` and `aspect`) or a text file, one prompt per line."""
    path = Path(path)
    if not path.is_file():
        raise ItercompError(f"prompts file not found: {path}; pass a .txt (one prompt per line) or .jsonl file")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        for number, row in enumerate(rows, 1):
            if "prompt" not in row:
                raise ItercompError(f"{path}:{number} has no 'prompt' field; each line needs {{\"prompt\": ...}}")
    else:
        rows = [{"prompt": line.strip()} for line in path.read_text().splitlines() if line.strip()]
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
    """Pair every image file in `folder` with its prompt by file name; returns (pairs, unmatched files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ItercompError(f"image folder not found: {folder}")
    by_id = {p["id"]: p for p in prompts}
    by_text = {p["prompt"].lower(): p for p in prompts}
    pairs, unmatched = [], []
    for file in sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES):
        stem = file.stem
        key = re.split(r"[_-]", stem, maxsplit=1)[0]
        match = by_id.get(key) or by_text.get(re.sub(r"_\d+$", "", stem).lower())
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
    return {"summary": summarize(images), "unmatched": [str(f) for f in unmatched], "images": images}


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


def format_summary(summary: dict) -> str:
    lines = [f"{'aspect':<26} {'images':>6} {'accuracy':>9} {'score':>7}"]
    for aspect, s in summary.items():
        lines.append(f"{aspect:<26} {s['n']:>6} {s['accuracy']:>9.1%} {s['mean_score']:>7.3f}")
    return "\n".join(lines)
