"""The shapes world's oracle as a black-box reward: the ceiling every learned reward model is measured against
(a perfect annotator; cf. the object detectors that score GenEval-style RL).

    reward_fn = OracleReward()
    rewards = reward_fn(images, prompts)    # {aspect: tensor[B]}: the same verdict under every aspect

The oracle judges the whole prompt at once, so every aspect gets the same value per image: `correct` (1 when
every predicate of the prompt holds, the metric the evaluation reports) plus the mean soft score of the
predicates in [0, 1] (partial credit, so a group of wrong images still has a best one). It reads pixels, not
gradients: only the modes that never differentiate the reward (select, dpo, grpo, awm) can use it.
"""

from __future__ import annotations

import torch

from itercomp.world import REWARD_ASPECTS, score

ORACLE = "oracle"
LEARNED = "learned"
REWARD_KINDS = (LEARNED, ORACLE)


class OracleReward:
    differentiable = False

    def __init__(self, aspects=REWARD_ASPECTS):
        self.aspects = list(aspects)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        if images.shape[0] != len(prompts):
            raise ValueError(f"{images.shape[0]} images for {len(prompts)} prompts")
        values = []
        for image, prompt in zip(images.detach().float().clamp(0, 1).cpu(), prompts):
            verdict = score(image, prompt)
            values.append(float(verdict.correct) + verdict.score)
        value = torch.tensor(values, device=images.device)
        return {aspect: value.clone() for aspect in self.aspects}
