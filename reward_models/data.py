"""Rankings in, pairs out: loading candidate images, batching rankings, the pair loss. The rankings file itself,
its splits and its pairs are core data (`itercomp.rankings`, `itercomp.prompts.split_for`).

A batch holds whole rankings: every candidate is scored once and all C(n, 2) ordered pairs of its ranking are
formed from those scores (n forward passes for n(n-1)/2 pairs, the ImageReward recipe). Candidates with the
same content hash are ties and give no pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from itercomp.errors import ItercompError
from itercomp.rankings import ranking_pairs
from itercomp.records import Ranking
from reward_models.preprocess import resize_center_crop


def load_image(path: Path) -> torch.Tensor:
    """3 x H x W float in [0, 1]."""
    if not path.is_file():
        raise ItercompError(
            f"candidate image not found: {path}; candidate paths are relative to the rankings.jsonl folder"
        )
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


class RankingDataset(Dataset):
    """One item per ranking: its candidate images (resized to `image_size`), its prompt and its pairs."""

    def __init__(self, rankings: list[Ranking], root: str | Path, image_size: int, cache: bool = True):
        self.rankings, self.root, self.image_size = rankings, Path(root), image_size
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.rankings)

    def images(self, index: int) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        ranking = self.rankings[index]
        images = torch.cat(
            [resize_center_crop(load_image(self.root / c.path)[None], self.image_size) for c in ranking.candidates]
        )
        if self._cache is not None:
            self._cache[index] = images
        return images

    def __getitem__(self, index: int) -> dict:
        ranking = self.rankings[index]
        return {"index": index, "images": self.images(index), "prompt": ranking.prompt, "pairs": ranking_pairs(ranking)}


def collate(items: list[dict]) -> dict:
    """Concatenate the candidates of several rankings; pairs index into the concatenated batch."""
    images, prompts, better, worse, offset = [], [], [], [], 0
    for item in items:
        n = item["images"].shape[0]
        images.append(item["images"])
        prompts += [item["prompt"]] * n
        better += [offset + b for b, _ in item["pairs"]]
        worse += [offset + w for _, w in item["pairs"]]
        offset += n
    return {
        "index": torch.tensor([item["index"] for item in items]),
        "images": torch.cat(images),
        "prompts": prompts,
        "better": torch.tensor(better, dtype=torch.long),
        "worse": torch.tensor(worse, dtype=torch.long),
    }


def pair_loss(rewards: torch.Tensor, better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: mean of -log sigmoid(r_better - r_worse) over the pairs."""
    return F.softplus(-(rewards[better] - rewards[worse])).mean()


def pair_correct(rewards: torch.Tensor, better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """1 per pair the rewards order like the ranking, 0.5 for an exact tie, else 0."""
    diff = rewards[better] - rewards[worse]
    return (diff > 0).float() + 0.5 * (diff == 0).float()
