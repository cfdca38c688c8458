"""Rankings in, pairs out: reading `rankings.jsonl`, splitting by prompt, batching rankings, the pair loss.

A batch holds whole rankings: every candidate is scored once and all C(n, 2) ordered pairs of its ranking are
formed from those scores (n forward passes for n(n-1)/2 pairs, the ImageReward recipe). Candidates with the
same content hash are ties and give no pair.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from itercomp.errors import ItercompError, PromptError
from itercomp.io import read_jsonl
from itercomp.records import Ranking
from reward_models.preprocess import resize_center_crop

# Out of 20 buckets: 16 train, 2 val, 2 test -- the same proportions as the shapes world's own splits.
_BUCKETS = (("train", 16), ("val", 18), ("test", 20))


def split_for(prompt: str) -> str:
    """The split of a prompt: the shapes world's fixed split when it parses, else a stable hash of the text."""
    from itercomp.world import split_of

    try:
        return split_of(prompt)
    except PromptError:
        bucket = int(hashlib.sha256(" ".join(prompt.lower().split()).encode()).hexdigest()[:8], 16) % 20
        return next(name for name, end in _BUCKETS if bucket < end)


@dataclass
class RankingFile:
    """The rankings of one `rankings.jsonl` with the folder its candidate paths are relative to."""

    rankings: list[Ranking]
    root: Path

    @classmethod
    def read(cls, path: str | Path) -> RankingFile:
        path = Path(path)
        rows = read_jsonl(path)
        if not rows:
            raise ItercompError(
                f"{path} holds no rankings; export some from the annotation app or run 'itercomp rewards make-data'"
            )
        return cls([Ranking.from_dict(r) for r in rows], path.parent)

    def select(self, aspect: str | None = None, split: str | None = None) -> list[Ranking]:
        return [
            r
            for r in self.rankings
            if (aspect is None or r.aspect == aspect) and (split is None or split_for(r.prompt) == split)
        ]


def load_image(path: Path) -> torch.Tensor:
    """3 x H x W float in [0, 1]."""
    if not path.is_file():
        raise ItercompError(
            f"candidate image not found: {path}; candidate paths are relative to the rankings.jsonl folder"
        )
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def ranking_pairs(ranking: Ranking) -> list[tuple[int, int]]:
    """(better, worse) candidate positions (indices into ranking.candidates) for every ordered pair, ties skipped."""
    position = {c.image_id: i for i, c in enumerate(ranking.candidates)}
    sha = {c.image_id: c.sha256 for c in ranking.candidates}
    return [(position[b], position[w]) for b, w in ranking.pairs() if not (sha[b] and sha[b] == sha[w])]


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
