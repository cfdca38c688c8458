"""awm: advantage-weighted matching, forward-process feedback (after Advantage Weighted Matching and DiffusionNFT).

Each prompt gets a group of samples, drawn without gradient in a few steps; the reward ranks them and the group
standardises it into advantages. The loss is the model's own denoising loss on those samples at fresh timesteps,
weighted by advantage: better-than-average samples become more likely, worse ones less. No reward gradient and
no sampler likelihoods, so any black-box reward serves (the oracle included) and any sampler draws the groups;
the pretraining-loss regulariser (`pretrain_loss_weight`) anchors the model to its data.
"""

from __future__ import annotations

import torch

from itercomp.finetune.loss import advantage_weights, group_advantages, weighted_matching_loss, weighted_reward
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.sampling import sample_and_score, seeded_generators


class AWMMode(FeedbackMode):
    @property
    def samples_per_prompt(self) -> int:
        return self.settings.group_size

    def describe(self) -> str:
        s = self.settings
        return (
            f"awm: groups of {s.group_size} in {self.sampling.num_inference_steps} steps, denoising loss x advantage "
            f"(clip {s.advantage_clip}, negatives x {s.negative_weight}), {s.timesteps_per_sample} timestep(s) each"
        )

    @torch.no_grad()
    def sample(self, prompts, rng, step, micro) -> MicroBatch:
        """The groups' images (in [0, 1]) and their advantage weights."""
        n = self.samples_per_prompt
        generators = seeded_generators(rng, len(prompts) * n)
        group = [p for p in prompts for _ in range(n)]
        images, rewards = sample_and_score(self.adapter, self.reward_fn, group, generators, self.sampling,
                                           self.accelerator)  # fmt: skip
        advantages = group_advantages(weighted_reward(rewards, self.config.reward_weights), n)
        weights = advantage_weights(advantages, self.settings.advantage_clip, self.settings.negative_weight)
        return MicroBatch(group, {"images": images.clamp(0, 1), "weights": weights}, rewards=rewards)

    def loss(self, batch, rng):
        """The advantage-weighted denoising loss, averaged over `timesteps_per_sample` fresh draws."""
        images, weights, total = batch.data["images"], batch.data["weights"], 0.0
        draws = self.settings.timesteps_per_sample
        for _ in range(draws):
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            losses = self.adapter.pretrain_loss(images, batch.prompts, generator, per_image=True)
            total = total + weighted_matching_loss(losses, weights) / draws
        return total, batch.rewards
