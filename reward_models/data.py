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
    return load_image_uint8(path).float() / 255.0


def load_image_uint8(path: Path, size: int | None = None) -> torch.Tensor:
    """3 x H x W uint8, or resized to `size` x `size` (shorter side, centre crop) and rounded back to uint8: exact
    for an image already at that size, within half a grey level otherwise."""
    if not path.is_file():
        raise ItercompError(
            f"candidate image not found: {path}; candidate paths are relative to the rankings.jsonl folder"
        )
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    image = torch.from_numpy(array.copy()).permute(2, 0, 1)
    if size is None or tuple(image.shape[1:]) == (size, size):
        return image
    resized = resize_center_crop(image[None].float() / 255.0, size)[0]
    return (resized * 255.0).round().clamp(0, 255).to(torch.uint8)


class ImageCache:
    """Decoded, resized candidate images as uint8 (3 bytes a pixel, a quarter of float32), kept up to `limit_mb`
    MiB; an image that does not fit is read from disk each time it is asked for. What a batch holds is the same
    either way (the uint8 image is what every read returns), so the bound changes memory and speed, not results."""

    def __init__(self, limit_mb: float):
        self.limit_bytes = int(limit_mb * 2**20)
        self.bytes = 0
        self._images: dict[tuple[str, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._images)

    def load(self, path: Path, size: int) -> torch.Tensor:
        key = (str(path), size)
        image = self._images.get(key)
        if image is None:
            image = load_image_uint8(path, size)
            if self.bytes + image.numel() <= self.limit_bytes:
                self._images[key] = image
                self.bytes += image.numel()
        return image


class RankingDataset(Dataset):
    """One item per ranking: its candidate images (resized to `image_size`), its prompt and its pairs. `cache`
    (shared between datasets) keeps decoded images in memory; without one every image is read from disk."""

    def __init__(self, rankings: list[Ranking], root: str | Path, image_size: int, cache: ImageCache | None = None):
        self.rankings, self.root, self.image_size = rankings, Path(root), image_size
        self.cache = cache

    def __len__(self) -> int:
        return len(self.rankings)

    def images(self, index: int) -> torch.Tensor:
        """C x 3 x S x S float in [0, 1], the ranking's candidates in order."""
        paths = [self.root / c.path for c in self.rankings[index].candidates]
        if self.cache is None:
            images = [load_image_uint8(path, self.image_size) for path in paths]
        else:
            images = [self.cache.load(path, self.image_size) for path in paths]
        return torch.stack(images).float() / 255.0

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
