"""refl / draft / alignprop: sample without gradient up to a late window of steps, run the window with gradient,
predict x0 at its last step, decode, score with a differentiable reward and step on the hinge loss
sum_a w_a * relu(hinge - r_a) * scale (ImageReward's ReFL as IterComp uses it, DRaFT-K, AlignProp)."""

from __future__ import annotations

import numpy as np
import torch

from itercomp.finetune.loss import feedback_loss, gradient_steps, refl_step_bounds
from itercomp.finetune.modes.base import FeedbackMode, MicroBatch
from itercomp.finetune.sampling import check_rewards, denoise, seeded_generators


class WindowMode(FeedbackMode):
    @property
    def grad_guidance(self) -> float:
        scale = self.settings.grad_guidance_scale
        return self.config.guidance_scale if scale is None else scale

    def describe(self) -> str:
        steps, mode = self.config.num_inference_steps, self.config.grad_mode
        if mode == "refl":
            first, last = refl_step_bounds(steps, self.settings.grad_step_range)
            window = f"refl: one gradient step in {first}..{last} of {steps}"
        elif mode == "draft":
            window = f"draft: the last {self.settings.draft_k} of {steps} steps"
        else:
            window = f"alignprop: the last 1..{self.settings.alignprop_max_k or steps} steps"
        return f"{window} | hinge {self.settings.reward_hinge}, scale {self.settings.reward_loss_scale}"

    def sample(self, prompts, rng, step, micro) -> MicroBatch:
        """The chain up to the window's first step; the window is drawn from (seed, step, micro) alone, so every
        process runs the same steps."""
        config, adapter = self.config, self.adapter
        generators = seeded_generators(rng, len(prompts))
        window = gradient_steps(
            config.grad_mode,
            config.num_inference_steps,
            np.random.default_rng([config.seed, step, micro]),
            self.settings.grad_step_range,
            self.settings.draft_k,
            self.settings.alignprop_max_k,
        )
        cond = adapter.encode(prompts, guidance=config.guidance_scale != 1 or self.grad_guidance != 1)
        latents = adapter.initial_latents(generators)
        adapter.set_timesteps(config.num_inference_steps)
        with torch.no_grad():
            latents = denoise(adapter, latents, cond, range(window[0]), config.guidance_scale, False, generators)
        return MicroBatch(prompts, {"cond": cond, "latents": latents, "generators": generators}, window)

    def loss(self, batch, rng):
        weights = self.config.reward_weights
        data = batch.data
        x0 = denoise(self.adapter, data["latents"], data["cond"], batch.grad_steps, self.grad_guidance, True,
                     data["generators"])  # fmt: skip
        images = self.adapter.decode(x0).float()
        rewards = check_rewards(self.reward_fn(images, batch.prompts), len(batch.prompts), weights)
        return feedback_loss(rewards, weights, self.settings.reward_hinge, self.settings.reward_loss_scale), rewards
