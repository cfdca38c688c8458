"""Sampling with an adapter, shared by the modes and the evaluation: run steps, score images, swap the model.

`reward_fn(images B x 3 x H x W in [0, 1], prompts) -> {aspect: Tensor[B]}`; `check_rewards` holds it to that.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from itercomp.errors import ItercompError
from itercomp.finetune.adapters import Conditioning, FeedbackAdapter


def denoise(
    adapter: FeedbackAdapter,
    latents,
    cond: Conditioning,
    steps,
    guidance_scale: float,
    score_last: bool,
    generator=None,
):
    """Run the sampling steps `steps` from `latents`; with `score_last`, return the x0 prediction at the last of
    them (the image that is decoded and scored) instead of stepping past it. A scheduler that draws fresh noise
    per step draws it from `generator` (the images' own generators)."""
    steps = list(steps)
    for i in steps:
        output = adapter.predict(latents, i, cond, guidance_scale)
        if score_last and i == steps[-1]:
            return adapter.x0(latents, output, i)
        latents = adapter.step(output, i, latents, generator)
    return latents


def check_rewards(rewards, batch: int, weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """The reward function's contract: {aspect: tensor[B]}, every aspect weighted, every weighted aspect scored."""
    if not isinstance(rewards, dict) or not rewards:
        raise ItercompError(
            f"the reward function returned {type(rewards).__name__}; it must return {{aspect: tensor[B]}}"
        )
    unweighted = sorted(set(rewards) - set(weights))
    missing = sorted(a for a, w in weights.items() if w and a not in rewards)
    if unweighted or missing:
        raise ItercompError(
            f"the reward function scores {sorted(rewards)} but reward_weights is {weights}: "
            + (f"give {unweighted} a weight (0 to ignore them)" if unweighted else f"drop {missing} or score them")
        )
    for aspect, r in rewards.items():
        if not isinstance(r, torch.Tensor) or r.shape != (batch,):
            shape = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ItercompError(f"reward {aspect!r} has shape {shape}; expected one reward per image, ({batch},)")
    return rewards


def seeded_generators(rng: np.random.Generator, n: int) -> list[torch.Generator]:
    """n noise generators seeded from `rng` (one per image)."""
    return [torch.Generator().manual_seed(int(s)) for s in rng.integers(2**31, size=n)]


@torch.no_grad()
def sample_and_score(adapter, reward_fn, prompts: list[str], generators, config, accelerator):
    """One image per (prompt, generator) with the full sampling chain and no gradient, and its rewards."""
    cond = adapter.encode(prompts, guidance=config.guidance_scale != 1)
    latents = adapter.initial_latents(generators)
    adapter.set_timesteps(config.num_inference_steps)
    steps = range(config.num_inference_steps)
    with accelerator.autocast():
        images = adapter.decode(denoise(adapter, latents, cond, steps, config.guidance_scale, True, generators))
        images = images.float()
        rewards = check_rewards(reward_fn(images, prompts), len(prompts), config.reward_weights)
    return images, rewards


@torch.no_grad()
def evaluate(adapter, reward_fn, items, config, accelerator, samples: list | None = None) -> dict[str, float]:
    """Mean reward per aspect over the fixed evaluation batch (prompt, seed), full sampling chain, no gradient.
    Each process scores a share of the batch; the means cover all of it. `samples` collects this process's
    images (H x W x 3 floats in [0, 1]) for the trackers."""
    from accelerate.utils import gather_object

    if not items:
        return {}
    model, adapter.model = adapter.model, adapter.denoiser  # the unwrapped model: no collective calls inside
    adapter.denoiser.eval()
    mine = items[accelerator.process_index :: accelerator.num_processes]
    scores = []
    for k in range(0, len(mine), config.batch_size):
        chunk = mine[k : k + config.batch_size]
        prompts = [p for p, _ in chunk]
        generators = [torch.Generator().manual_seed(s) for _, s in chunk]
        images, rewards = sample_and_score(adapter, reward_fn, prompts, generators, config, accelerator)
        if samples is not None:
            samples += list(images.detach().float().permute(0, 2, 3, 1).cpu().numpy())
        scores += [{a: float(r[j]) for a, r in rewards.items()} for j in range(len(prompts))]
    adapter.model = model
    everything = gather_object(scores) if accelerator.num_processes > 1 else scores
    return {a: float(np.mean([s[a] for s in everything])) for a in everything[0]}


@contextlib.contextmanager
def use_model(adapter, module):
    """Call `module` instead of the trained denoiser inside the block (the reference model of DPO and GRPO)."""
    model, adapter.model = adapter.model, module
    try:
        yield
    finally:
        adapter.model = model


def denoising_errors(adapter, images, prompts, seed: int) -> torch.Tensor:
    """Per-image denoising errors at times and noise drawn from `seed` (equal seeds noise images alike)."""
    return adapter.pretrain_loss(images, prompts, torch.Generator().manual_seed(seed), per_image=True)
