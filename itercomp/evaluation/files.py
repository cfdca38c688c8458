"""Images on disk: prompt files of any text, folders of images matched to their prompts, scoring them in batches,
and writing them in T2I-CompBench's layout so that its official scripts can score them too.

An *entry* is one image: {"path", "prompt_id", "prompt", "aspect"} plus what its source knows (`seed`, a prompt
row's `category`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from itercomp.errors import ItercompError, PromptError
from itercomp.evaluation.base import Evaluator
from itercomp.io import atomic_dir, png_bytes, write_jsonl
from itercomp.prompts import generic_prompt_id, read_prompt_file
from itercomp.world.evaluate import match_images
from itercomp.world.scene import parse
from itercomp.world.vocab import ASPECTS

# aspect -> T2I-CompBench's category folder (its prompt lists: color / shape / texture, spatial, non_spatial,
# complex); attribute binding goes under its row's `category` when the row names one.
CATEGORIES = {
    "attribute_binding": "attribute_binding",
    "spatial_relationship": "spatial",
    "non_spatial_relationship": "non_spatial",
    "complex": "complex",
}
ATTRIBUTE_CATEGORIES = ("color", "shape", "texture")


def load_prompt_rows(path, aspect: str | None = None) -> list[dict]:
    """The rows of a prompt file (.jsonl or one prompt per line), each with an `id` (the row's, else
    `generic_prompt_id`) and an `aspect`: the row's, else `aspect`, else the shapes world's reading of the prompt.
    Other keys of a row (such as `category`) are kept."""
    if aspect is not None and aspect not in ASPECTS:
        raise ItercompError(f"aspect={aspect!r} is unknown; use one of {', '.join(ASPECTS)}")
    out = []
    for number, row in enumerate(read_prompt_file(path), 1):
        own = row.get("aspect") or aspect
        if own is None:
            try:
                own = parse(row["prompt"]).aspect
            except PromptError:
                raise ItercompError(
                    f'{path}:{number}: no aspect for {row["prompt"]!r}; give each JSONL row an "aspect" or pass '
                    f"--aspect ({', '.join(ASPECTS)})"
                ) from None
        if own not in ASPECTS:
            raise ItercompError(f"{path}:{number}: aspect {own!r} is unknown; use one of {', '.join(ASPECTS)}")
        out.append({**row, "id": row.get("id") or generic_prompt_id(row["prompt"]), "aspect": own})
    return out


def folder_entries(prompts: list[dict], folder) -> tuple[list[dict], list[str]]:
    """(entries, unmatched files) of a folder of images named after their prompts (`match_images`)."""
    pairs, unmatched = match_images(prompts, folder)
    entries = []
    for row, file in pairs:
        entry = {"path": str(file), "prompt_id": row["id"], "prompt": row["prompt"], "aspect": row["aspect"]}
        if row.get("category") is not None:
            entry["category"] = row["category"]
        entries.append(entry)
    return entries, [str(f) for f in unmatched]


def load_image(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def score_entries(evaluator: Evaluator, entries: Sequence[dict], progress: bool = True) -> list[dict]:
    """Score every entry's image with `evaluator`, `evaluator.batch_size` images per call (a progress bar over the
    batches); one row per entry: the entry's keys, then the evaluator's."""
    from tqdm import tqdm

    rows = []
    starts = range(0, len(entries), evaluator.batch_size)
    for start in tqdm(starts, desc=f"eval {evaluator.name}", unit="batch", disable=not progress):
        chunk = entries[start : start + evaluator.batch_size]
        images = [load_image(e["path"]) for e in chunk]
        scored = evaluator.score(images, [e["prompt"] for e in chunk], [e["aspect"] for e in chunk])
        if len(scored) != len(chunk):
            raise ValueError(f"evaluator {evaluator.name!r} returned {len(scored)} rows for {len(chunk)} images")
        for entry, row in zip(chunk, scored):
            if "score" not in row or "correct" not in row:
                raise ValueError(f"evaluator {evaluator.name!r} returned a row without 'score' and 'correct': {row}")
            rows.append({**entry, **row, "score": float(row["score"])})
    return rows


def t2i_compbench_category(entry: dict) -> str:
    """The category folder an entry goes to (`CATEGORIES`; color / shape / texture from the prompt row)."""
    category = entry.get("category")
    if entry["aspect"] == "attribute_binding" and category is not None:
        if category not in ATTRIBUTE_CATEGORIES:
            raise ItercompError(
                f"category {category!r} of {entry['prompt']!r} is not one of T2I-CompBench's attribute categories; "
                f"use {', '.join(ATTRIBUTE_CATEGORIES)} or leave it out"
            )
        return category
    return CATEGORIES[entry["aspect"]]


def sample_name(prompt: str, index: int) -> str:
    """T2I-CompBench's sample file name, `{prompt}_{index:06d}.png` (its scripts read the prompt back up to the
    first '_' and the question id from the digits after the last)."""
    return f"{prompt}_{index:06d}.png"


def export_t2i_compbench(entries: Sequence[dict], out_dir) -> dict[str, int]:
    """Write the entries' images as `out_dir/<category>/samples/{prompt}_{index:06d}.png`, numbered from 0 per
    category in prompt order (a prompt's images together), with `out_dir/<category>/export.jsonl` saying which
    file came from where. Each category folder is replaced as a whole. Returns {category: images}."""
    for entry in entries:
        if "_" in entry["prompt"] or "/" in entry["prompt"]:
            raise ItercompError(
                f"prompt {entry['prompt']!r} holds '_' or '/'; T2I-CompBench reads the prompt back from the file "
                "name up to the first '_', so reword the prompt before exporting"
            )
    by_category: dict[str, list[dict]] = {}
    for entry in entries:
        by_category.setdefault(t2i_compbench_category(entry), []).append(entry)
    counts = {}
    for category, mine in by_category.items():
        order = {p: k for k, p in enumerate(dict.fromkeys(e["prompt"] for e in mine))}
        mine = sorted(mine, key=lambda e: (order[e["prompt"]], e.get("seed", 0), e["path"]))
        with atomic_dir(Path(out_dir) / category) as folder:
            records = []
            (folder / "samples").mkdir()
            for index, entry in enumerate(mine):
                name = sample_name(entry["prompt"].strip(), index)
                (folder / "samples" / name).write_bytes(png_bytes(load_image(entry["path"])))
                records.append({"file": f"samples/{name}", "question_id": index, **entry})
            write_jsonl(folder / "export.jsonl", records)
        counts[category] = len(mine)
    return counts
