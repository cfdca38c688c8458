"""Rankings of one model's own samples (same-model pairs), oracle-ranked, with exact augmentations of the shapes
world and hard negatives made from the samples themselves.

Reward feedback works among the seeds of one model and one prompt, which differ in details (a circle drawn as a
blob, a relation that barely holds), not between gallery members that differ grossly. The rankings here teach
exactly those details. Per prompt (`samples`: one row per image of the model, several seeds per prompt):

1. **seeds**: the model's seeds, plus, for the `negatives_from` best seeds, the same image with two named objects'
   colours exchanged (`itercomp.world.augment.colour_swap_negatives`: the same drawing with the binding and the
   direction of a relation broken) -- ranked by the oracle.
2. **mirror**: the same images flipped left-right, ranked for the prompt with left/right swapped (exact: the
   oracle's verdicts carry over); `vertical` adds the top-bottom flip with above/below swapped for prompts
   without a triangle. A mirrored prompt that falls into another split than the original is dropped, so no
   test prompt is ever trained on.
3. **renders**: a clean render of the prompt against renders of `edit_renders` one-attribute contradicting edits
   (itercomp.world.edits), the hard negatives of `itercomp rewards make-data`.

Order: the oracle's verdict first, then its soft score (`oracle_key`): an image with every predicate right ranks
above every image with one wrong, whatever their soft scores; equal keys are ties (no pair).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from itercomp.errors import ItercompError, PromptError
from itercomp.io import save_png
from itercomp.records import SIMULATED, Candidate, Ranking, image_id
from itercomp.world import parse, prompt_id, render, score, split_of
from itercomp.world.augment import colour_swap_negatives, mirror, swap_relations
from itercomp.world.edits import edits

ORDERS = ("verdict_then_score", "verdict")


@dataclass
class OwnSamplesConfig:
    negatives_from: int = field(
        default=2, metadata={"help": "colour-swapped hard negatives of this many best seeds per prompt (0: none)"}
    )
    mirror: bool = field(default=True, metadata={"help": "add the left-right mirrored ranking (left/right swapped)"})
    vertical: bool = field(
        default=False, metadata={"help": "add the top-bottom mirrored ranking (above/below swapped; no triangles)"}
    )
    edit_renders: int = field(
        default=3, metadata={"help": "one-edit renders ranked against a clean render per prompt (0: no such ranking)"}
    )
    order: str = field(
        default="verdict_then_score",
        metadata={"help": "verdict_then_score: the oracle's verdict, then its soft score; verdict: correct above "
                  "incorrect, ties otherwise (only pairs whose verdicts differ)"},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "seed of the renders and edits"})

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r} is unknown; use one of {', '.join(ORDERS)}")
        if self.negatives_from < 0 or self.edit_renders < 0:
            raise ValueError(
                f"negatives_from and edit_renders must be >= 0, got {self.negatives_from} and {self.edit_renders}"
            )


def oracle_key(image, prompt: str, order: str = "verdict_then_score") -> float:
    """The oracle's order: verdict first (1 for correct), then (unless order="verdict") the soft score in [0, 1]."""
    verdict = score(image, prompt)
    return float(verdict.correct) + (verdict.score if order == "verdict_then_score" else 0.0)


def ranked(prompt: str, aspect: str, candidates: list[Candidate], keys: list[float], round: int = 0) -> Ranking:
    """A Ranking best first by `keys`; equal keys share a rank (a tie gives no pair)."""
    order = np.argsort(-np.asarray(keys), kind="stable")
    ranks, rank, previous = [], 0, None
    for position, i in enumerate(order):
        if previous is None or keys[i] != previous:
            rank = position
        ranks.append(rank)
        previous = keys[i]
    return Ranking(prompt_id(prompt), prompt, aspect, candidates, [candidates[i].image_id for i in order],
                   SIMULATED, round=round, ranks=ranks)  # fmt: skip


def oracle_ranking(prompt: str, aspect: str, items: list[tuple[Candidate, np.ndarray]], order: str) -> Ranking:
    """`ranked` with the oracle's keys of (candidate, image) items."""
    return ranked(prompt, aspect, [c for c, _ in items], [oracle_key(image, prompt, order) for _, image in items])


def _candidate(out: Path, aspect: str, iid: str, generator: str, seed: int, image: np.ndarray):
    """(Candidate, image) with the image written to out/images/<aspect>/<iid>.png."""
    path = out / "images" / aspect / f"{iid}.png"
    return Candidate(iid, generator, seed, str(path.relative_to(out)), save_png(path, image)), image


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ItercompError(f"sample image not found: {path}; sample paths are relative to the samples' root")
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def build_rankings(samples: list[dict], root, out, config: OwnSamplesConfig | None = None) -> list[Ranking]:
    """Rankings (see the module doc) from sample rows {aspect, prompt, seed, path[, generator]}; new images
    (negatives, mirrors, renders) are written under `out`/images and every candidate path is relative to `out`."""
    config = config or OwnSamplesConfig()
    root, out = Path(root).resolve(), Path(out).resolve()
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in samples:
        missing = [k for k in ("aspect", "prompt", "seed", "path") if k not in row]
        if missing:
            raise ItercompError(f"sample row {row} lacks {', '.join(missing)}")
        groups[(row["aspect"], row["prompt"])].append(row)
    rng = np.random.default_rng(config.seed)
    rankings: list[Ranking] = []
    for (aspect, prompt), rows in tqdm(groups.items(), desc="own-sample rankings", unit="prompt"):
        if len({r["seed"] for r in rows}) < 2:
            raise ItercompError(f"{prompt!r} has {len(rows)} sample(s) of one seed; same-model pairs need >= 2 seeds")
        pid, split = prompt_id(prompt), split_of(prompt)

        items: list[tuple[Candidate, np.ndarray]] = []
        for r in rows:
            image = _load(root / r["path"])
            generator = r.get("generator", "base")
            items.append(_candidate(out, aspect, image_id(pid, generator, r["seed"]), generator, r["seed"], image))
        keys = [oracle_key(image, prompt, config.order) for _, image in items]
        for i in np.argsort(-np.asarray(keys), kind="stable")[: config.negatives_from]:
            candidate, image = items[i]
            for kind, negative in colour_swap_negatives(image, prompt):
                generator = f"{candidate.generator}+{kind}"
                items.append(_candidate(out, aspect, image_id(pid, generator, candidate.seed), generator,
                                        candidate.seed, negative))  # fmt: skip
                keys.append(oracle_key(negative, prompt, config.order))
        rankings.append(ranked(prompt, aspect, [c for c, _ in items], keys))

        flips = ["horizontal"] if config.mirror else []
        if config.vertical and not any(o.shape == "triangle" for o in parse(prompt).objects):
            flips.append("vertical")
        for axis in flips:
            flipped_prompt = swap_relations(parse(prompt), axis).prompt()
            if split_of(flipped_prompt) != split:
                continue
            mirrored: list[tuple[Candidate, np.ndarray]] = []
            fpid = prompt_id(flipped_prompt)
            for candidate, image in items:
                generator = f"{candidate.generator}+{axis}"
                iid = image_id(fpid, generator, candidate.seed)
                mirrored.append(_candidate(out, aspect, iid, generator, candidate.seed, mirror(image, prompt, axis)[0]))
            rankings.append(oracle_ranking(flipped_prompt, aspect, mirrored, config.order))

        if config.edit_renders:
            scene = parse(prompt)
            renders: list[tuple[Candidate, np.ndarray]] = []
            canvas = items[0][1].shape[0]
            clean = render(scene, int(rng.integers(2**31)), canvas)
            renders.append(_candidate(out, aspect, image_id(pid, "render", 0), "render", 0, clean))
            for k, (kind, edited) in enumerate(edits(scene, rng)[: config.edit_renders]):
                try:
                    image = render(edited, int(rng.integers(2**31)), canvas)
                except PromptError:  # an edit the renderer cannot lay out
                    continue
                generator = f"render+{kind}"
                renders.append(_candidate(out, aspect, image_id(pid, generator, k + 1), generator, k + 1, image))
            if len(renders) > 1:
                rankings.append(oracle_ranking(prompt, aspect, renders, config.order))
    return rankings


def count_pairs(rankings: list[Ranking]) -> int:
    return sum(len(r.pairs()) for r in rankings)
