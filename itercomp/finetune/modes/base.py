"""`FeedbackMode`: what one fine-tuning method does inside the trainer's shared loop.

The trainer draws each micro-batch's prompts, then calls

    batch = mode.sample(prompts, rng, step, micro)        # SAMPLING: without gradient
    loss, rewards = mode.loss(batch, rng)                 # TRAINING: with gradient, inside autocast

and does the rest (the regulariser, backward, clipping, the optimizer, EMA, checkpoints, metrics) the same way for
every mode. `rng` is the micro-batch's generator: a mode draws its noise seeds from it in `sample` and anything
else it needs in `loss`, so a run is reproduced step by step on resume.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class MicroBatch:
    """What `sample` hands to `loss`: the prompts, the mode's own tensors in `data`, the steps run with gradient
    (recorded in the history) and the rewards of the samples ({} when they are scored in `loss`)."""

    prompts: list[str]
    data: dict = field(default_factory=dict)
    grad_steps: list[int] = field(default_factory=list)
    rewards: dict[str, torch.Tensor] = field(default_factory=dict)


class FeedbackMode(ABC):
    """One family of fine-tuning modes. Subclasses implement `describe`, `sample` and `loss`; `settings` is their
    section of the config (e.g. `config.grpo`). Registered with `itercomp.finetune.modes.register_mode`, which
    also says whether the mode differentiates the reward."""

    samples_per_prompt = 1  # images sampled per prompt in a micro-batch (the banner's count)
    ema = None  # the run's ParameterEMA (set by the trainer when ema_decay > 0), for modes that train around it

    def __init__(self, config, adapter, reward_fn, accelerator):
        """Called before LoRA adapters are added, so a mode can copy the starting weights here."""
        self.config, self.adapter, self.reward_fn, self.accelerator = config, adapter, reward_fn, accelerator
        self.settings = config.mode_settings
        # the config its own samples are drawn with: the mode's `sample_steps` where it has one and it is set
        steps = getattr(self.settings, "sample_steps", None) or config.num_inference_steps
        same = steps == config.num_inference_steps
        self.sampling = config if same else dataclasses.replace(config, num_inference_steps=steps)

    @abstractmethod
    def describe(self) -> str:
        """One phrase for the banner: what the mode samples and trains on."""

    @abstractmethod
    def sample(self, prompts: list[str], rng: np.random.Generator, step: int, micro: int) -> MicroBatch:
        """Sample the micro-batch without gradient (noise seeds from `rng`; `step` and `micro` seed shared draws
        such as the gradient window, which every process must agree on)."""

    @abstractmethod
    def loss(self, batch: MicroBatch, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The feedback loss of the micro-batch (before the regulariser) and the rewards to log."""
