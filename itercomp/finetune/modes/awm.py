"""awm: advantage-weighted matching, forward-process feedback (after Advantage Weighted Matching and DiffusionNFT).

Each prompt gets a group of samples, drawn without gradient in a few steps; the reward ranks them and the group
standardises it into advantages. The loss is the model's own denoising loss on those samples at fresh timesteps,
weighted by advantage: better-than-average samples become more likely, worse ones less. No reward gradient and
no sampler likelihoods, so any black-box reward serves (the oracle included) and any sampler draws the groups;
the pretraining-loss regulariser (`pretrain_loss_weight`) anchors the model to its data.

`objective: nft` trains DiffusionNFT's negative-aware loss instead: each sample's denoising loss of two implicit
policies mixed from the model and the old policy, (1 - b) v_old + b v for its positive share r and
(1 + b) v_old - b v for the rest, r = 0.5 + 0.5 clip(A / advantage_clip, -1, 1). Its minimum is the old policy's
output moved a bounded step towards the good samples' targets and away from the bad ones', so the negatives
cannot push the model arbitrarily far. The old policy is the run's moving average of the weights (`ema_decay`),
as DiffusionNFT's, so the bound moves with training; it is checkpointed with the run.
"""

from __future__ import annotations

import copy

import torch

from itercomp.finetune.loss import (
    advantage_weights,
    group_advantages,
    implicit_policy,
    nft_loss,
    optimality_probability,
    weighted_matching_loss,
    weighted_reward,
)
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.sampling import denoising_errors, sample_and_score, seeded_generators, use_model


class ImplicitPolicy(torch.nn.Module):
    """Called in the model's place: the implicit policy old + beta (model - old) on the same inputs (the old
    policy without gradient). Keeps the model's return type (a tensor, or a tuple's first item)."""

    def __init__(self, model, old_policy, beta: float):
        super().__init__()
        self.model, self.old_policy, self.beta = model, old_policy, beta

    def forward(self, *args, **kwargs):
        output = self.model(*args, **kwargs)
        with torch.no_grad():
            old = self.old_policy(*args, **kwargs)
        if isinstance(output, tuple):
            return (implicit_policy(output[0], old[0], self.beta), *output[1:])
        return implicit_policy(output, old, self.beta)


class AWMMode(FeedbackMode):
    def __init__(self, config, adapter, reward_fn, accelerator):
        super().__init__(config, adapter, reward_fn, accelerator)
        nft = self.settings.objective == "nft"  # nft's old policy: a module that `sample` loads the EMA into
        self.old_policy = copy.deepcopy(adapter.denoiser).requires_grad_(False).eval() if nft else None

    @property
    def samples_per_prompt(self) -> int:
        return self.settings.group_size

    def describe(self) -> str:
        s = self.settings
        if self.old_policy is not None:
            objective = f"negative-aware implicit policies around the EMA (beta {s.nft_beta}"
        else:
            objective = f"denoising loss x advantage (negatives x {s.negative_weight}"
        return (
            f"awm: groups of {s.group_size} in {self.sampling.num_inference_steps} steps, {objective}, clip "
            f"{s.advantage_clip}), {s.timesteps_per_sample} timestep(s) each"
        )

    @torch.no_grad()
    def sample(self, prompts, rng, step, micro) -> MicroBatch:
        """The groups' images (in [0, 1]) and their advantage weights (nft: and the old policy, the EMA as of now)."""
        nft = self.old_policy is not None
        if nft and micro == 0:
            self.ema.copy_to(dict(self.old_policy.named_parameters()))
        n = self.samples_per_prompt
        generators = seeded_generators(rng, len(prompts) * n)
        group = [p for p in prompts for _ in range(n)]
        images, rewards = sample_and_score(self.adapter, self.reward_fn, group, generators, self.sampling,
                                           self.accelerator)  # fmt: skip
        advantages = group_advantages(weighted_reward(rewards, self.config.reward_weights), n)
        s = self.settings
        if nft:
            weights = optimality_probability(advantages, s.advantage_clip)
        else:
            weights = advantage_weights(advantages, s.advantage_clip, s.negative_weight)
        return MicroBatch(group, {"images": images.clamp(0, 1), "weights": weights}, rewards=rewards)

    def loss(self, batch, rng):
        """The objective's loss, averaged over `timesteps_per_sample` fresh (time, noise) draws."""
        images, weights, total = batch.data["images"], batch.data["weights"], 0.0
        draws = self.settings.timesteps_per_sample
        for _ in range(draws):
            seed = int(rng.integers(2**31))
            if self.old_policy is None:
                losses = self.denoising_losses(images, batch.prompts, seed)
                total = total + weighted_matching_loss(losses, weights) / draws
            else:
                beta = self.settings.nft_beta  # both policies see the same times and noise
                positive = self.denoising_losses(images, batch.prompts, seed, beta)
                negative = self.denoising_losses(images, batch.prompts, seed, -beta)
                total = total + nft_loss(positive, negative, weights) / draws
        return total, batch.rewards

    def denoising_losses(self, images, prompts, seed: int, beta: float | None = None) -> torch.Tensor:
        """Per-image denoising losses of the model, or (beta) of the implicit policy around the old policy."""
        if beta is None:
            return denoising_errors(self.adapter, images, prompts, seed)
        with use_model(self.adapter, ImplicitPolicy(self.adapter.model, self.old_policy, beta)):
            return denoising_errors(self.adapter, images, prompts, seed)
