"""Where a run's prompts come from: the shapes world (the default) or prompt files, in three pools.

    ranking    prompts the gallery renders and annotators rank, `prompts_per_aspect` new train-split ones and
               `val_prompts_per_aspect` new val-split ones per reward aspect each round (val-split rankings
               hold out reward-model validation; a prompt's split is `itercomp.prompts.split_for`'s)
    finetune   prompts the base model is fine-tuned on, the same pool every round (IterComp fine-tunes on
               10,000 DiffusionDB-style prompts); for files, the whole pool, or the ranking pool's train-split
               prompts when no file is given
    test       prompts every round is evaluated on, the same every round: `eval_prompts_per_aspect` per aspect

A file is `.jsonl` (one object per line with `prompt` and, for the ranking and test pools, `aspect`; an optional
`split` of train, val or test places the row, so one file can serve every pool) or text (one prompt per line, as
T2I-CompBench ships them). A text file's aspect is given as `aspect=path`, or read from a
T2I-CompBench name such as `color_train.txt` or `non_spatial_val.txt` (`CATEGORIES`). A test prompt never
reaches the ranking or fine-tuning pools: any that appears there is dropped (and counted).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from itercomp.errors import ItercompError
from itercomp.prompts import generic_prompt_id, read_prompt_file, split_for, text_key
from itercomp.world.vocab import ASPECTS, REWARD_ASPECTS

SOURCES = ("shapes", "files")
# T2I-CompBench's categories (file names `<category>_train.txt` / `<category>_val.txt`) and IterComp's aspects.
CATEGORIES = {
    "color": "attribute_binding",
    "shape": "attribute_binding",
    "texture": "attribute_binding",
    "spatial": "spatial_relationship",
    "non_spatial": "non_spatial_relationship",
    "complex": "complex",
}
_CATEGORY_FILE = re.compile(r"^(?P<category>[a-z_]+?)(_(train|val|test))?$")


@dataclass
class PromptSources:
    """Where the ranking, fine-tuning and test prompts come from (the `prompts:` section)."""

    source: str = field(default="shapes", metadata={"help": "shapes (the world's prompt generator) or files"})
    ranking: tuple[str, ...] = field(
        default=(), metadata={"help": "files: prompt files to rank ([aspect=]path; .jsonl rows carry `aspect`)"}
    )
    finetune: tuple[str, ...] = field(
        default=(), metadata={"help": "files: prompt files to fine-tune on (default: the ranking pool's train split)"}
    )
    test: tuple[str, ...] = field(
        default=(), metadata={"help": "files: prompt files to evaluate on ([aspect=]path), never trained on"}
    )

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ItercompError(f"prompts.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        given = [name for name in ("ranking", "finetune", "test") if getattr(self, name)]
        if self.source == "shapes" and given:
            raise ItercompError(
                f"prompts.{given[0]} names files but prompts.source is 'shapes'; set prompts.source=files to use them"
            )
        if self.source == "files":
            missing = [name for name in ("ranking", "test") if not getattr(self, name)]
            if missing:
                raise ItercompError(
                    f"prompts.source=files needs prompts.{missing[0]} (one or more [aspect=]path files)"
                )


def file_aspect(path: Path) -> tuple[str | None, str | None]:
    """(aspect, category) read from a T2I-CompBench file name, e.g. `color_val.txt` -> (attribute_binding,
    color); (None, None) for any other name."""
    match = _CATEGORY_FILE.match(path.stem.lower())
    category = match["category"] if match else None
    if category not in CATEGORIES:
        return None, None
    return CATEGORIES[category], category


def read_pool(entries, pool: str, aspects=ASPECTS, need_aspect: bool = True) -> list[dict]:
    """The prompts of a pool's files as {id, prompt, aspect, category} rows, first occurrence of each prompt
    kept. `entries` are `path` or `aspect=path`; each row's aspect comes from the row, the prefix or the file
    name, in that order, and must be one of `aspects` where `need_aspect` is set."""
    rows, seen = [], set()
    for entry in entries:
        prefix, _, rest = str(entry).rpartition("=") if "=" in str(entry) else ("", "", str(entry))
        if prefix and prefix not in aspects:
            raise ItercompError(
                f"prompts.{pool}: {entry!r} names the aspect {prefix!r}; use one of {', '.join(aspects)}"
            )
        path = Path(rest)
        named, category = file_aspect(path)
        for row in read_prompt_file(path):
            aspect = row.get("aspect") or prefix or named
            if need_aspect and aspect not in aspects:
                raise ItercompError(
                    f"prompts.{pool}: {path} gives the prompt {row['prompt']!r} "
                    + (f"the aspect {aspect!r}" if aspect else "no aspect")
                    + f"; write it as <aspect>={path} or give each JSONL row an aspect ({', '.join(aspects)})"
                )
            key = text_key(row["prompt"])
            if key in seen:
                continue
            seen.add(key)
            rows.append(
                {
                    "id": row.get("id") or generic_prompt_id(row["prompt"]),
                    "prompt": row["prompt"].strip(),
                    "aspect": aspect,
                    "category": row.get("category") or category,
                    "split": row.get("split"),
                }
            )
    return rows


def shuffled(rows: list, seed: int) -> list:
    """A fixed permutation of `rows` (the same for the same seed and rows), so each round takes the next slice."""
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


@dataclass
class PromptPools:
    """A run's three pools, read once when the run starts."""

    ranking: dict[str, dict[str, list[dict]]]  # aspect -> split (train, val) -> prompt rows, in round order
    finetune: list[str]
    test: list[tuple[str, str]]  # (aspect, prompt)
    dropped: int = 0  # training-pool prompts dropped because they are test prompts
    source: str = "files"

    @cached_property
    def val_keys(self) -> set[str]:
        return {text_key(r["prompt"]) for splits in self.ranking.values() for r in splits.get("val", [])}

    def is_val(self, prompt: str) -> bool:
        """Whether a ranked prompt belongs to the val split (its rankings hold out reward-model validation)."""
        return text_key(prompt) in self.val_keys

    def round_prompts(self, k: int, per_split: dict[str, int]) -> list[dict]:
        """Round k's new prompts to rank: the k-th slice of each aspect's and split's pool."""
        return [
            row
            for aspect in REWARD_ASPECTS
            for split, n in per_split.items()
            for row in self.ranking.get(aspect, {}).get(split, [])[n * (k - 1) : n * k]
        ]

    def check(self, rounds: int, per_split: dict[str, int]) -> None:
        """Refuse a run whose ranking pool cannot give every round its new prompts."""
        for aspect in REWARD_ASPECTS:
            for split, n in per_split.items():
                have = len(self.ranking.get(aspect, {}).get(split, []))
                if have < rounds * n:
                    raise ItercompError(
                        f"the ranking prompts hold {have} {split}-split prompts of {aspect}; {rounds} round(s) x {n} "
                        f"new ones need {rounds * n}: add prompts, lower the per-aspect counts or the rounds"
                    )
        if not self.test:
            raise ItercompError("the test prompts are empty; give prompts.test files with prompts in them")
        if not self.finetune:
            raise ItercompError("the fine-tuning prompts are empty; give prompts.finetune files with prompts in them")


def shapes_pools(seed: int, rounds: int, per_split: dict[str, int], finetune_per_aspect: int, test_per_aspect: int):
    """The shapes world's pools: deterministic draws per aspect and split (a run extended by more rounds gets the
    same earlier rounds), fine-tuning prompts from their own seed, the test prompts the same in every run."""
    from gallery.run import world_prompts
    from itercomp.models.evaluate import evaluation_prompts
    from itercomp.world import generate_prompts

    ranking = {
        aspect: {split: world_prompts(aspect, split, n * rounds, seed=seed) for split, n in per_split.items()}
        for aspect in REWARD_ASPECTS
    }
    finetune = [p for a in ASPECTS for p in generate_prompts(a, "train", finetune_per_aspect, seed=seed + 1)]
    return PromptPools(ranking, finetune, evaluation_prompts(test_per_aspect, "test"), source="shapes")


def file_pools(sources: PromptSources, seed: int, test_per_aspect: int) -> PromptPools:
    """The pools of prompt files: the test prompts first (the first `test_per_aspect` of each aspect in a
    fixed order), then the ranking prompts without them, split by `split_for` (its val split; every other
    prompt is train) and shuffled by `seed`; then the fine-tuning prompts without them."""
    from gallery.run import prompt_entry

    test_rows = [r for r in read_pool(sources.test, "test") if r["split"] in (None, "test")]
    by_aspect = defaultdict(list)
    for row in sorted(test_rows, key=lambda r: r["id"]):  # a fixed order that mixes a category's files
        by_aspect[row["aspect"]].append(row)
    test = [(a, r["prompt"]) for a in ASPECTS for r in by_aspect.get(a, [])[:test_per_aspect]]
    held_out = {text_key(p) for _, p in test}

    dropped = 0
    ranking: dict[str, dict[str, list[dict]]] = {a: {"train": [], "val": []} for a in REWARD_ASPECTS}
    for row in read_pool(sources.ranking, "ranking", aspects=(*REWARD_ASPECTS, *ASPECTS)):
        if row["split"] == "test":
            continue  # a file shared by the pools: its test rows are the test pool's
        if row["aspect"] not in REWARD_ASPECTS:
            raise ItercompError(f"prompts.ranking: {row['prompt']!r} is a {row['aspect']} prompt; only "
                                f"{', '.join(REWARD_ASPECTS)} prompts are ranked (give it to prompts.finetune or "
                                "prompts.test)")  # fmt: skip
        if text_key(row["prompt"]) in held_out:
            dropped += 1
            continue
        split = row["split"] or ("val" if split_for(row["prompt"]) == "val" else "train")
        ranking[row["aspect"]][split].append(prompt_entry(row["prompt"], row["aspect"], row["id"]))
    ranking = {a: {s: shuffled(rows, seed) for s, rows in splits.items()} for a, splits in ranking.items()}

    if sources.finetune:
        pool = [r["prompt"] for r in read_pool(sources.finetune, "finetune", need_aspect=False)]
    else:
        pool = [r["prompt"] for splits in ranking.values() for r in splits["train"]]
    finetune = [p for p in pool if text_key(p) not in held_out]
    dropped += len(pool) - len(finetune)
    return PromptPools(ranking, finetune, test, dropped)
