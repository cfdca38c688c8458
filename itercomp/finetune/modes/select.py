"""select: sample several images per prompt without gradient, keep the one the reward scores highest, and train
the denoising loss on it (reward-ranked fine-tuning, RAFT); optionally also on the winners of a rankings file,
the gallery's best image of each ranked prompt and aspect. The reward is never differentiated."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from itercomp.finetune.loss import best_of, weighted_reward
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.preferences import RankedWinners
from itercomp.finetune.sampling import sample_and_score, seeded_generators


class SelectMode(FeedbackMode):
    def __init__(self, config, adapter, reward_fn, accelerator):
        super().__init__(config, adapter, reward_fn, accelerator)
        path = self.settings.winners
        self.winners = RankedWinners.from_rankings(path) if path else None

    @property
    def samples_per_prompt(self) -> int:
        return self.settings.samples_per_prompt

    def describe(self) -> str:
        sources = [f"the best of {self.samples_per_prompt} samples per prompt"] if self.settings.online else []
        if self.winners is not None:
            sources.append(f"{self.config.batch_size} of {len(self.winners)} ranked winners")
        return f"select: {' + '.join(sources)} per micro-batch, denoising loss on them"

    @torch.no_grad()
    def sample(self, prompts, rng, step, micro) -> MicroBatch:
        """Each prompt's best candidate (images in [0, 1]) with every candidate's rewards, then the ranked winners.
        The seeds are drawn even without own samples, so the random streams do not depend on the setting."""
        n = self.samples_per_prompt
        generators = seeded_generators(rng, len(prompts) * n)
        picks, pick_prompts, rewards = [], [], {}
        if self.settings.online:
            repeated = [p for p in prompts for _ in range(n)]
            images, rewards = sample_and_score(
                self.adapter, self.reward_fn, repeated, generators, self.config, self.accelerator
            )
            best = best_of(weighted_reward(rewards, self.config.reward_weights), n)
            picks, pick_prompts = [images[best].clamp(0, 1)], list(prompts)
        if self.winners is not None:
            images, winner_prompts = self.winners.sample(self.config.batch_size, rng)
            size = (self.adapter.resolution, self.adapter.resolution)
            if images.shape[-2:] != size:
                images = F.interpolate(images, size=size, mode="bilinear", antialias=True).clamp(0, 1)
            picks.append(images.to(self.adapter.device))
            pick_prompts += winner_prompts
        return MicroBatch(pick_prompts, {"picks": torch.cat(picks)}, rewards=rewards)

    def loss(self, batch, rng):
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return self.adapter.pretrain_loss(batch.data["picks"], batch.prompts, generator), batch.rewards
