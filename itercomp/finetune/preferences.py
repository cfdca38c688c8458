"""Preference pairs for Diffusion-DPO from ranked candidates: every (better, worse) pair of every ranking of a
`rankings.jsonl` (the loop's rankings, `itercomp annotate export`, `itercomp rewards make-data`).

    pairs = PreferencePairs.from_rankings("runs/iterate/round_1/rankings/rankings.jsonl")
    preferred, other, prompts = pairs.sample(8, rng)     # B x 3 x H x W in [0, 1] each, one prompt per pair

And each ranking's winner, for fine-tuning on the gallery's best image per prompt and aspect (select mode):

    winners = RankedWinners.from_rankings("runs/iterate/round_1/rankings/rankings.jsonl")
    images, prompts = winners.sample(8, rng)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from itercomp.errors import ItercompError, PromptError
from itercomp.rankings import RankingFile, ranking_pairs
from itercomp.world.prompts import split_of


def trainable(prompt: str) -> bool:
    """Whether a ranked prompt may train: any prompt but the shapes world's test prompts, which are fixed and never
    trained on. Other prompts have no fixed test split; their held-out prompts are the caller's to keep out of the
    rankings (the loop never ranks its test pool), so a rankings file of T2I-CompBench prompts trains whole."""
    try:
        return split_of(prompt) != "test"
    except PromptError:
        return True


class PreferencePairs:
    def __init__(self, images: torch.Tensor, pairs: list[tuple[int, int]], prompts: list[str]):
        """`images` N x 3 x H x W in [0, 1]; pairs[k] = (preferred, other) indices into it, for prompts[k]."""
        if not pairs:
            raise ItercompError("no preference pairs: the rankings order no two different images")
        if len(pairs) != len(prompts):
            raise ItercompError(f"{len(pairs)} pairs but {len(prompts)} prompts; give one prompt per pair")
        self.images, self.pairs, self.prompts = images, np.asarray(pairs), list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def from_rankings(cls, path: str | Path) -> PreferencePairs:
        """Every ordered pair of every ranking whose prompt may train (`trainable`). Images of one size are kept in
        memory; each is read once however many rankings hold it."""
        rankings = RankingFile.read(path)
        index: dict[Path, int] = {}
        images, pairs, prompts = [], [], []
        for ranking in rankings.rankings:
            if not trainable(ranking.prompt):
                continue
            positions = []
            for candidate in ranking.candidates:
                file = rankings.path_of(candidate).resolve()
                if file not in index:
                    index[file] = len(images)
                    images.append(_read_rgb(file))
                positions.append(index[file])
            for better, worse in ranking_pairs(ranking):
                pairs.append((positions[better], positions[worse]))
                prompts.append(ranking.prompt)
        sizes = {image.shape for image in images}
        if len(sizes) > 1:
            raise ItercompError(f"{path}: candidate images have different sizes {sorted(sizes)}; resize them to one")
        stacked = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
        return cls(torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255, pairs, prompts)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        idx = rng.integers(len(self), size=n)
        preferred, other = self.pairs[idx, 0], self.pairs[idx, 1]
        return self.images[preferred], self.images[other], [self.prompts[i] for i in idx]


def _read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8."""
    if not path.is_file():
        raise ItercompError(
            f"candidate image not found: {path}; candidate paths are relative to the rankings.jsonl folder"
        )
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


class RankedWinners:
    """The first-ranked image of every ranking whose prompt may train (`trainable`): what the annotators (or the reward
    models, for grown rankings) found best among the gallery's images of that prompt and aspect."""

    def __init__(self, images: torch.Tensor, prompts: list[str]):
        if len(images) == 0:
            raise ItercompError(
                "no ranked winners: the rankings hold no ranking of a prompt that may train (shapes test prompts never do)"
            )
        self.images, self.prompts = images, list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def from_rankings(cls, path: str | Path) -> RankedWinners:
        rankings = RankingFile.read(path)
        by_id = {}
        images, prompts = [], []
        for ranking in rankings.rankings:
            if not trainable(ranking.prompt) or not ranking.order:
                continue
            candidates = {c.image_id: c for c in ranking.candidates}
            file = rankings.path_of(candidates[ranking.order[0]]).resolve()
            if file not in by_id:
                by_id[file] = _read_rgb(file)
            images.append(by_id[file])
            prompts.append(ranking.prompt)
        if len({image.shape for image in images}) > 1:
            raise ItercompError(f"{path}: the winning images have different sizes; resize them to one")
        stacked = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
        return cls(torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255, prompts)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
        idx = rng.integers(len(self), size=n)
        return self.images[idx], [self.prompts[i] for i in idx]
