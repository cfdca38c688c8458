"""The reward models as an evaluator (`rewards`), for prompts no other evaluator reads.

Each image is scored by the reward model of its own aspect (normalised reward, as `itercomp iterate` reports its
learned rewards); a `complex` prompt gets the mean of the three aspects' rewards. Rewards are not verdicts, so
`correct` is None. Registered when this module is imported (the orchestration imports it before building an
evaluator); importing it loads no torch.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from itercomp.errors import ItercompError
from itercomp.evaluation.base import Evaluator, EvaluatorConfig, check_inputs
from itercomp.evaluation.registry import register_evaluator
from itercomp.world.vocab import REWARD_ASPECTS


@dataclass
class RewardsConfig(EvaluatorConfig):
    path: str | None = field(
        default=None,
        metadata={"help": "folder of <aspect>/ reward models (or an ensemble folder), e.g. <run>/round_<k>/rewards "
                          "or itercomp/weights/rewards"},
    )  # fmt: skip
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:N"})
    batch_size: int = field(default=64, metadata={"help": "images per reward-model call"})

    def __post_init__(self):
        super().__post_init__()
        if self.path is None:
            raise ItercompError(
                "the rewards evaluator needs path=FOLDER, a folder of <aspect>/ reward models "
                "(e.g. path=itercomp/weights/rewards or a run's round_<k>/rewards)"
            )
        if not Path(self.path).is_dir():
            raise ItercompError(f"path={self.path!r} is not a folder; give a folder of <aspect>/ reward models")
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", self.device):
            raise ItercompError(f"device={self.device!r} is not a device; use cpu, cuda or cuda:N")


@register_evaluator("rewards")
class RewardsEvaluator(Evaluator):
    config_class = RewardsConfig

    def __init__(self, config: RewardsConfig | None = None):
        super().__init__(config)
        self._ensemble = None

    @property
    def ensemble(self):
        if self._ensemble is None:
            from reward_models.ensemble import RewardEnsemble

            self._ensemble = RewardEnsemble.from_pretrained(self.config.path).to(self.config.device).eval()
        return self._ensemble

    def score(self, images, prompts, aspects) -> list[dict]:
        import torch

        check_inputs(images, prompts, aspects)
        images = [np.asarray(image, dtype=np.uint8) for image in images]
        rewards: list[dict[str, float]] = [{} for _ in images]
        by_size = defaultdict(list)  # one batch per image size
        for i, image in enumerate(images):
            by_size[image.shape].append(i)
        for indices in by_size.values():
            batch = torch.from_numpy(np.stack([images[i] for i in indices])).permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():  # the ensemble as fine-tuning and the loop call it
                out = self.ensemble(batch.to(self.config.device), [prompts[i] for i in indices])
            for aspect in REWARD_ASPECTS:
                for i, value in zip(indices, out[aspect].float().cpu().tolist()):
                    rewards[i][aspect] = value
        rows = []
        for aspect, own in zip(aspects, rewards):
            if aspect == "complex":
                rows.append({"score": sum(own.values()) / len(own), "correct": None, "rewards": own})
            else:
                rows.append({"score": own[aspect], "correct": None})
        return rows
