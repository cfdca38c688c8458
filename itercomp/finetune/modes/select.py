"""select: sample several images per prompt without gradient, keep the one the reward scores highest, and train
the denoising loss on it (reward-ranked fine-tuning, RAFT). The reward is never differentiated."""

from __future__ import annotations

import torch

from itercomp.finetune.loss import best_of, weighted_reward
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.sampling import sample_and_score, seeded_generators


class SelectMode(FeedbackMode):
    @property
    def samples_per_prompt(self) -> int:
        return self.settings.samples_per_prompt

    def describe(self) -> str:
        return f"select: the best of {self.samples_per_prompt} samples per prompt, denoising loss on it"

    @torch.no_grad()
    def sample(self, prompts, rng, step, micro) -> MicroBatch:
        """Each prompt's best candidate (images in [0, 1]) with every candidate's rewards."""
        n = self.samples_per_prompt
        generators = seeded_generators(rng, len(prompts) * n)
        repeated = [p for p in prompts for _ in range(n)]
        images, rewards = sample_and_score(
            self.adapter, self.reward_fn, repeated, generators, self.config, self.accelerator
        )
        best = best_of(weighted_reward(rewards, self.config.reward_weights), n)
        return MicroBatch(prompts, {"picks": images[best].clamp(0, 1)}, rewards=rewards)

    def loss(self, batch, rng):
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return self.adapter.pretrain_loss(batch.data["picks"], batch.prompts, generator), batch.rewards
