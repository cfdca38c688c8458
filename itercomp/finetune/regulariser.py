"""(image, prompt) pairs for the pretraining-loss regulariser: one interface, three sources.

Anything with `__len__` and `sample(n, rng) -> (images B x 3 x H x W in [0, 1], prompts)` works:
- `ArrayPairs`: images already in memory (e.g. `itercomp.models.data.render_dataset`'s ground-truth renders);
- `FolderPairs`: a folder of image files with their prompts, read lazily;
- `regulariser_from_config("shapes" | folder)`: what FeedbackConfig.regulariser_data names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from itercomp.errors import ItercompError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class PairSource(Protocol):
    def __len__(self) -> int: ...

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]: ...


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


class ArrayPairs:
    def __init__(self, images: np.ndarray, prompts: list[str]):
        if len(images) != len(prompts) or not len(prompts):
            raise ItercompError(f"regulariser data needs one prompt per image, got {len(images)} and {len(prompts)}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ItercompError(f"regulariser images must be N x H x W x 3 uint8, got shape {images.shape}")
        self.images, self.prompts = images, list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def sample(self, n, rng):
        idx = rng.integers(len(self), size=n)
        return _to_tensor(self.images[idx]), [self.prompts[i] for i in idx]


class FolderPairs:
    """A folder of pairs, in one of three layouts:
    - prompts.jsonl rows with "image" (a path relative to the folder) and "prompt";
    - `itercomp world sample` output: prompts.jsonl rows with "id" and "prompt", images/<id>_*.png;
    - image files with a caption file of the same stem (cat.png + cat.txt)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ItercompError(f"regulariser_data: {self.folder} is not a folder; give 'shapes' or a folder of pairs")
        self.pairs = self._find()
        if not self.pairs:
            raise ItercompError(
                f"regulariser_data: no (image, prompt) pairs in {self.folder}; expected prompts.jsonl with 'image' "
                "and 'prompt', `itercomp world sample` output, or images with .txt captions"
            )

    def _find(self) -> list[tuple[Path, str]]:
        index = self.folder / "prompts.jsonl"
        if index.is_file():
            from itercomp.io import read_jsonl

            pairs = []
            for row in read_jsonl(index):
                if "image" in row:
                    pairs.append((self.folder / row["image"], row["prompt"]))
                elif "id" in row:
                    pairs += [(p, row["prompt"]) for p in sorted((self.folder / "images").glob(f"{row['id']}_*"))]
            return pairs
        return [
            (p, p.with_suffix(".txt").read_text().strip())
            for p in sorted(self.folder.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.with_suffix(".txt").is_file()
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, n, rng):
        chosen = [self.pairs[i] for i in rng.integers(len(self), size=n)]
        images = []
        for path, _ in chosen:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
        sizes = {im.shape for im in images}
        if len(sizes) > 1:
            raise ItercompError(f"regulariser images in {self.folder} differ in size ({sorted(sizes)}); resize them")
        return _to_tensor(np.stack(images)), [prompt for _, prompt in chosen]


def regulariser_from_config(source: str, samples: int, seed: int, canvas: int) -> PairSource:
    """'shapes': `samples` ground-truth renders of train-split prompts at `canvas` px; otherwise a folder."""
    if source == "shapes":
        from itercomp.models.data import render_dataset

        images, prompts = render_dataset(samples, seed=seed, canvas=canvas, workers=1)
        return ArrayPairs(images, prompts)
    return FolderPairs(source)
