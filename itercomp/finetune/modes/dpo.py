"""dpo: Diffusion-DPO. Each micro-batch's pairs are the current model's own samples of each prompt paired by
reward (`online_pairs`: the best vs the worst, or every pair whose rewards differ, `pairing`) and `batch_size`
pairs drawn from a rankings.jsonl (`preference_pairs`); the loss compares the trained and the starting model's
denoising errors on both images of a pair, at the same times and noise (with `rpo_alpha`, plus that multiple of
the preferred images' errors). The reward is never differentiated."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from itercomp.finetune.loss import all_pairs, best_and_worst, dpo_loss, weighted_reward
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.preferences import PreferencePairs
from itercomp.finetune.sampling import denoising_errors, sample_and_score, seeded_generators, use_model


class DPOMode(FeedbackMode):
    def __init__(self, config, adapter, reward_fn, accelerator):
        super().__init__(config, adapter, reward_fn, accelerator)
        # the reference: the starting weights, frozen (copied before LoRA adapters are added)
        self.reference = copy.deepcopy(adapter.denoiser).requires_grad_(False).eval()
        path = self.settings.preference_pairs
        self.preferences = PreferencePairs.from_rankings(path) if path else None

    @property
    def samples_per_prompt(self) -> int:
        return self.settings.samples_per_prompt

    def describe(self) -> str:
        sources = []
        if self.settings.online_pairs:
            steps = self.sampling.num_inference_steps
            which = "best vs worst" if self.settings.pairing == "best_worst" else "every differing pair"
            sources.append(f"{which} of {self.samples_per_prompt} own samples per prompt ({steps} steps)")
        if self.preferences is not None:
            sources.append(f"{self.config.batch_size} of {len(self.preferences)} ranked pairs")
        draws = self.settings.timesteps_per_pair
        per_pair = f", {draws} (time, noise) draws per pair" if draws > 1 else ""
        alpha = self.settings.rpo_alpha
        rpo = f", + {alpha} x the preferred images' denoising error" if alpha else ""
        return f"dpo: {' + '.join(sources)} per micro-batch, beta {self.settings.beta}{per_pair}{rpo}"

    def sample(self, prompts, rng, step, micro) -> MicroBatch:
        """The own pairs (online_pairs) followed by the ranked pairs; the rewards of the own samples ({} if none).
        The seeds are drawn even without online pairs, so the random streams do not depend on the setting."""
        generators = seeded_generators(rng, len(prompts) * self.samples_per_prompt)
        preferred, other, pair_prompts, rewards = [], [], [], {}
        if self.settings.online_pairs:
            good, bad, pair_prompts, rewards = self.own_pairs(prompts, generators)
            preferred, other = [good], [bad]
        if self.preferences is not None:
            good, bad, ranked_prompts = self.preferences.sample(self.config.batch_size, rng)
            size = (self.adapter.resolution, self.adapter.resolution)
            if good.shape[-2:] != size:
                good, bad = (
                    F.interpolate(x, size=size, mode="bilinear", antialias=True).clamp(0, 1) for x in (good, bad)
                )
            preferred.append(good.to(self.adapter.device))
            other.append(bad.to(self.adapter.device))
            pair_prompts = pair_prompts + ranked_prompts
        data = {"preferred": torch.cat(preferred), "other": torch.cat(other)}
        return MicroBatch(pair_prompts, data, rewards=rewards)

    @torch.no_grad()
    def own_pairs(self, prompts, generators):
        """(preferred images, other images, their prompts, every candidate's rewards): each prompt's best and worst
        candidate by weighted reward, or every pair of its candidates whose rewards differ (`pairing: all`). Ties
        are dropped; if every prompt ties, one pair
        of identical images stands in (its loss has no gradient, and every process still runs the same calls)."""
        n = self.samples_per_prompt
        repeated = [p for p in prompts for _ in range(n)]
        images, rewards = sample_and_score(
            self.adapter, self.reward_fn, repeated, generators, self.sampling, self.accelerator
        )
        pair = best_and_worst if self.settings.pairing == "best_worst" else all_pairs
        winners, losers = pair(weighted_reward(rewards, self.config.reward_weights), n)
        if winners.numel() == 0:
            winners = losers = torch.zeros(1, dtype=torch.long, device=images.device)
        images = images.clamp(0, 1)
        return images[winners], images[losers], [repeated[int(i)] for i in winners], rewards

    def loss(self, batch, rng):
        """The DPO loss averaged over the pairs and timesteps_per_pair (time, noise) draws of each."""
        seed = int(rng.integers(2**31))  # the same times and noise for both images of a pair
        draws = self.settings.timesteps_per_pair  # each copy of a pair gets its own time and noise
        pair = [x.repeat(draws, *[1] * (x.ndim - 1)) for x in (batch.data["preferred"], batch.data["other"])]
        prompts = batch.prompts * draws
        errors = [denoising_errors(self.adapter, x, prompts, seed) for x in pair]
        with torch.no_grad(), use_model(self.adapter, self.reference):
            references = [denoising_errors(self.adapter, x, prompts, seed) for x in pair]
        return dpo_loss(*errors, *references, self.settings.beta, self.settings.rpo_alpha), batch.rewards
