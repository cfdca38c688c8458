"""Preference pairs for Diffusion-DPO from ranked candidates: every (better, worse) pair of every ranking of a
`rankings.jsonl` (the loop's rankings, `itercomp annotate export`, `itercomp rewards make-data`).

    pairs = PreferencePairs.from_rankings("runs/iterate/round_1/rankings/rankings.jsonl")
    preferred, other, prompts = pairs.sample(8, rng)     # B x 3 x H x W in [0, 1] each, one prompt per pair
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from itercomp.errors import ItercompError


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
    def from_rankings(cls, path: str | Path, splits: tuple[str, ...] = ("train", "val")) -> PreferencePairs:
        """Every ordered pair of every ranking whose prompt is in `splits` (test prompts never train). Images of
        one size are kept in memory; each is read once however many rankings hold it."""
        from reward_models.data import RankingFile, load_image, ranking_pairs, split_for

        rankings = RankingFile.read(path)
        index: dict[Path, int] = {}
        images, pairs, prompts = [], [], []
        for ranking in rankings.rankings:
            if split_for(ranking.prompt) not in splits:
                continue
            positions = []
            for candidate in ranking.candidates:
                file = (rankings.root / candidate.path).resolve()
                if file not in index:
                    index[file] = len(images)
                    images.append(load_image(file))
                positions.append(index[file])
            for better, worse in ranking_pairs(ranking):
                pairs.append((positions[better], positions[worse]))
                prompts.append(ranking.prompt)
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) > 1:
            raise ItercompError(f"{path}: candidate images have different sizes {sorted(sizes)}; resize them to one")
        stacked = torch.stack(images) if images else torch.zeros(0, 3, 1, 1)
        return cls(stacked, pairs, prompts)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        idx = rng.integers(len(self), size=n)
        preferred, other = self.pairs[idx, 0], self.pairs[idx, 1]
        return self.images[preferred], self.images[other], [self.prompts[i] for i in idx]
