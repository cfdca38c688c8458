"""grpo: Flow-GRPO. Each prompt gets a group of SDE sampling chains (every step but the last stochastic), scored
at the end; the advantages are the rewards standardised within the group, and the loss is PPO's clipped policy
loss on the log-probabilities of the sampled transitions (+ kl_beta x the KL to the starting model). The reward
is never differentiated; the pipeline must be a rectified flow (SD3, Flux, Sana, the shapes DiT)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from itercomp.finetune.adapters import Conditioning
from itercomp.finetune.loss import (
    clipped_policy_loss,
    gaussian_kl,
    gaussian_log_prob,
    group_advantages,
    sde_step,
    weighted_reward,
)
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.sampling import check_rewards, denoise, seeded_generators, use_model


@dataclass
class Trajectories:
    """A batch of SDE sampling chains. states[i] is the latent before step i (T states for T steps: the last step
    runs the ODE to the image), log_probs[i] the log-probability of the transition states[i] -> states[i + 1]
    under the sampling weights."""

    cond: Conditioning
    states: list[torch.Tensor]
    log_probs: list[torch.Tensor]
    images: torch.Tensor
    rewards: dict[str, torch.Tensor]


class GRPOMode(FeedbackMode):
    def __init__(self, config, adapter, reward_fn, accelerator):
        super().__init__(config, adapter, reward_fn, accelerator)
        # the KL's reference: the starting weights, frozen (copied before LoRA adapters are added)
        self.reference = None
        if self.settings.kl_beta > 0:
            self.reference = copy.deepcopy(adapter.denoiser).requires_grad_(False).eval()

    @property
    def samples_per_prompt(self) -> int:
        return self.settings.group_size

    @property
    def stochastic_steps(self) -> int:
        return self.config.num_inference_steps - 1

    def describe(self) -> str:
        s = self.settings
        return (
            f"grpo: groups of {s.group_size}, {s.train_steps or self.stochastic_steps} of {self.stochastic_steps} "
            f"SDE steps trained, noise level {s.noise_level}, KL x {s.kl_beta}"
        )

    def sample(self, prompts, rng, step, micro) -> MicroBatch:
        """The group's chains and their advantages; the trained steps are drawn from (seed, step, micro) alone,
        so every process runs the same steps."""
        generators = seeded_generators(rng, len(prompts) * self.samples_per_prompt)
        group = [p for p in prompts for _ in range(self.samples_per_prompt)]
        chains = self.sample_trajectories(group, generators)
        advantages = group_advantages(
            weighted_reward(chains.rewards, self.config.reward_weights), self.samples_per_prompt
        )
        order = np.random.default_rng([self.config.seed, step, micro, 1]).permutation(self.stochastic_steps)
        trained = sorted(order[: self.settings.train_steps or self.stochastic_steps].tolist())
        return MicroBatch(group, {"chains": chains, "advantages": advantages}, trained, chains.rewards)

    def transition(self, latents, i: int, cond) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the stochastic step i of the (guided) model: Flow-GRPO's SDE around its Euler step."""
        adapter = self.adapter
        output = adapter.predict(latents, i, cond, self.config.guidance_scale)
        x0 = adapter.x0(latents, output, i)
        return sde_step(
            latents, x0, adapter.sigma(i), adapter.sigma(i + 1), self.settings.noise_level, adapter.sigma(1)
        )

    @torch.no_grad()
    def sample_trajectories(self, prompts: list[str], generators) -> Trajectories:
        """One SDE chain per (prompt, generator), every step but the last stochastic, scored at the end."""
        adapter, config, steps = self.adapter, self.config, self.config.num_inference_steps
        cond = adapter.encode(prompts, guidance=config.guidance_scale != 1)
        latents = adapter.initial_latents(generators)
        adapter.set_timesteps(steps)
        states, log_probs = [latents], []
        with self.accelerator.autocast():
            for i in range(steps - 1):
                mean, std = self.transition(latents, i, cond)
                latents = mean + std * adapter._noise(latents.shape, generators)
                log_probs.append(gaussian_log_prob(latents.float(), mean.float(), std.float()))
                states.append(latents)
            images = adapter.decode(denoise(adapter, latents, cond, [steps - 1], config.guidance_scale, True)).float()
            rewards = check_rewards(self.reward_fn(images, prompts), len(prompts), config.reward_weights)
        return Trajectories(cond, states, log_probs, images, rewards)

    def loss(self, batch, rng):
        """The clipped policy loss (+ kl_beta x the KL to the reference model) averaged over the trained steps."""
        chains, advantages, total = batch.data["chains"], batch.data["advantages"], 0.0
        for i in batch.grad_steps:
            mean, std = self.transition(chains.states[i], i, chains.cond)
            log_prob = gaussian_log_prob(chains.states[i + 1].float(), mean.float(), std.float())
            loss = clipped_policy_loss(log_prob, chains.log_probs[i], advantages, self.settings.clip_range)
            if self.settings.kl_beta > 0:
                with torch.no_grad(), use_model(self.adapter, self.reference):
                    reference_mean, _ = self.transition(chains.states[i], i, chains.cond)
                loss = loss + self.settings.kl_beta * gaussian_kl(mean.float(), reference_mean.float(), std.float())
            total = total + loss / len(batch.grad_steps)
        return total, batch.rewards
