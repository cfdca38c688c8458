"""The interface the feedback loop uses: the three aspect reward models behind one call.

ensemble = RewardEnsemble.from_pretrained("itercomp/weights/rewards")   # subfolders per aspect
rewards = ensemble(images, prompts)        # {aspect: tensor[B]}, differentiable w.r.t. images
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from itercomp.errors import ItercompError
from itercomp.world import REWARD_ASPECTS
from reward_models.model import RewardModel


class RewardEnsemble(nn.Module):
    def __init__(self, models: dict[str, RewardModel]):
        super().__init__()
        if not models:
            raise ValueError("a RewardEnsemble needs at least one reward model")
        self.models = nn.ModuleDict(models)

    @property
    def aspects(self) -> list[str]:
        return list(self.models)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, aspects=REWARD_ASPECTS, **kwargs) -> RewardEnsemble:
        path = Path(path)
        missing = [a for a in aspects if not (path / a / "config.json").is_file()]
        if missing:
            raise ItercompError(
                f"{path} has no reward model for {', '.join(missing)}; expected {path}/<aspect>/config.json "
                "(train them with 'itercomp rewards train')"
            )
        return cls({a: RewardModel.from_pretrained(path / a, **kwargs) for a in aspects})

    def save_pretrained(self, path: str | os.PathLike) -> None:
        for aspect, model in self.models.items():
            model.save_pretrained(Path(path) / aspect)

    def forward(self, images: torch.Tensor, prompts: list[str], normalize: bool = True) -> dict[str, torch.Tensor]:
        """images B x 3 x H x W in [0, 1] (any size), one prompt per image -> {aspect: rewards[B]}."""
        return {aspect: model.score(images, prompts, normalize=normalize) for aspect, model in self.models.items()}

    def score(self, images: torch.Tensor, prompts: list[str], normalize: bool = True) -> dict[str, torch.Tensor]:
        return self(images, prompts, normalize=normalize)
