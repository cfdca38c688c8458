"""The math of reward feedback as small pure functions: the hinge loss over aspects, the gradient window, the
choice among candidates (select and dpo), Flow-GRPO's SDE step, log-probability, advantages and clipped loss, and
Diffusion-DPO's loss."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def feedback_loss(
    rewards: dict[str, torch.Tensor], weights: dict[str, float], hinge: float, scale: float
) -> torch.Tensor:
    """sum_a w_a * mean_b relu(hinge - r_a[b]) * scale (IterComp's relu(2 - r) * 1e-3, constants named).

    Every aspect in `rewards` needs a weight (a reward model nobody weighs is a configuration slip), and every
    weighted aspect must be scored.
    """
    unweighted = sorted(set(rewards) - set(weights))
    if unweighted:
        raise ValueError(f"rewards for {unweighted} have no weight; add them to reward_weights (0 to ignore them)")
    missing = sorted(a for a, w in weights.items() if w and a not in rewards)
    if missing:
        raise ValueError(
            f"reward_weights names {missing} but the reward function returned only {sorted(rewards)}; "
            "remove them from reward_weights or score them"
        )
    terms = [weights[a] * torch.relu(hinge - r.float()).mean() for a, r in rewards.items() if weights[a]]
    return torch.stack(terms).sum() * scale


def refl_step_bounds(num_steps: int, step_range: tuple[float, float]) -> tuple[int, int]:
    """Inclusive 0-based bounds of ReFL's gradient step from fractions of the schedule: (0.75, 1.0) of 40 steps
    is (30, 39), IterComp's range; the same fractions give (15, 19) of 20 steps."""
    lo, hi = step_range
    first = min(num_steps - 1, math.floor(lo * num_steps))
    last = max(first, min(num_steps - 1, math.ceil(hi * num_steps) - 1))
    return first, last


def gradient_steps(
    mode: str,
    num_steps: int,
    rng: np.random.Generator,
    step_range: tuple[float, float] = (0.75, 1.0),
    draft_k: int = 1,
    alignprop_max_k: int | None = None,
) -> list[int]:
    """The sampling step indices that run with gradient; the last one's x0 prediction is decoded and scored,
    so steps after it are never run.

    - "refl": one step m drawn uniformly from `step_range` (ReFL, IterComp);
    - "draft": the last `draft_k` steps (DRaFT-K);
    - "alignprop": the last K steps, K drawn uniformly from 1..alignprop_max_k (AlignProp's randomised truncation).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if mode == "refl":
        first, last = refl_step_bounds(num_steps, step_range)
        return [int(rng.integers(first, last + 1))]
    if mode == "draft":
        k = min(draft_k, num_steps)
    elif mode == "alignprop":
        k = int(rng.integers(1, min(alignprop_max_k or num_steps, num_steps) + 1))
    else:
        raise ValueError(f"mode={mode!r}; expected 'refl', 'draft' or 'alignprop'")
    return list(range(num_steps - k, num_steps))


def weighted_reward(rewards: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_a w_a * r_a per image: how select mode ranks one prompt's candidates."""
    return torch.stack([weights[a] * r.float() for a, r in rewards.items() if weights.get(a)]).sum(0)


def best_of(scores: torch.Tensor, candidates: int) -> torch.Tensor:
    """Flat index of the best-scoring candidate of each prompt, for scores laid out prompt-major (prompt i's
    candidates at i * candidates ... i * candidates + candidates - 1)."""
    if scores.ndim != 1 or scores.numel() % candidates:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {candidates} candidates")
    groups = scores.view(-1, candidates)
    return torch.arange(groups.shape[0], device=scores.device) * candidates + groups.argmax(1)


# ---- GRPO for rectified flow (Flow-GRPO) ----------------------------------------------------------------------


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.view(-1, *([1] * (like.ndim - 1))) if value.ndim else value


def sde_step(
    latents: torch.Tensor, x0: torch.Tensor, sigma, sigma_next, noise_level: float, sigma_max=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of Flow-GRPO's stochastic step from noise level `sigma` to `sigma_next` for
    x_t = (1 - sigma) x0 + sigma eps: the Euler step of the ODE plus the score correction that keeps the
    marginals, with std = noise_level * sqrt(sigma / (1 - sigma)) * sqrt(sigma - sigma_next). noise_level 0 is the
    ODE (Euler) step. At sigma = 1 the ratio uses `sigma_max` (the next-largest sigma) in the denominator."""
    sigma, sigma_next = _per_sample(sigma, latents), _per_sample(sigma_next, latents)
    denominator = 1 - (sigma if sigma_max is None else torch.where(sigma >= 1, _per_sample(sigma_max, latents), sigma))
    velocity = (latents - x0) / sigma
    dt = sigma_next - sigma  # negative: sampling runs from noise (1) to data (0)
    std_t = noise_level * (sigma / denominator).sqrt()
    mean = latents * (1 + std_t**2 / (2 * sigma) * dt) + velocity * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, std_t * (-dt).sqrt()


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(sample; mean, std^2) averaged over every dimension but the batch (Flow-GRPO's per-image log-prob)."""
    std = torch.broadcast_to(std, mean.shape)
    log_prob = -((sample - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
    return log_prob.flatten(1).mean(1)


def group_advantages(rewards: torch.Tensor, group: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean) / (std + eps) within each prompt's group of `group` images (prompt-major): GRPO's advantage.
    A group whose images all score the same gets advantage 0 (nothing to learn from it)."""
    if rewards.ndim != 1 or rewards.numel() % group:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group}")
    groups = rewards.float().view(-1, group)
    centred = groups - groups.mean(1, keepdim=True)
    std = groups.std(1, unbiased=False, keepdim=True)
    return (centred / (std + eps)).view(-1)


def clipped_policy_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's clipped surrogate, mean over images: max(-A r, -A clip(r, 1 - c, 1 + c)), r = exp(log p - log p_old)."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    return torch.maximum(unclipped, clipped).mean()


def gaussian_kl(mean: torch.Tensor, reference_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL between two Gaussian steps with the same std, averaged over dimensions and images (Flow-GRPO's KL)."""
    std = torch.broadcast_to(std, mean.shape)
    return (((mean - reference_mean) ** 2) / (2 * std**2)).flatten(1).mean(1).mean()


# ---- Diffusion-DPO ---------------------------------------------------------------------------------------------


def dpo_loss(
    errors_w: torch.Tensor,
    errors_l: torch.Tensor,
    reference_w: torch.Tensor,
    reference_l: torch.Tensor,
    beta: float,
    rpo_alpha: float = 0.0,
) -> torch.Tensor:
    """Diffusion-DPO: -log sigmoid(-beta * ((e_w - e_w^ref) - (e_l - e_l^ref))), mean over pairs, where e are
    per-image denoising errors at the same noise and time for the preferred (w) and the other (l) image. It falls
    when the model denoises the preferred image better than the reference does, relative to the other one.
    `rpo_alpha` adds RPO's likelihood term on the preferred images, rpo_alpha * mean(e_w): DPO alone may lower
    both images' likelihood (only their difference is trained); this keeps the preferred one likely."""
    margin = (errors_w - reference_w) - (errors_l - reference_l)
    return -F.logsigmoid(-beta * margin).mean() + rpo_alpha * errors_w.mean()


def _groups(scores: torch.Tensor, candidates: int) -> torch.Tensor:
    """Flat prompt-major scores as (prompts, candidates)."""
    if scores.ndim != 1 or scores.numel() % candidates:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {candidates} candidates")
    return scores.view(-1, candidates)


def best_and_worst(scores: torch.Tensor, candidates: int, min_gap: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (winners, losers) of each prompt's best and worst candidate, prompt-major, for the prompts
    whose best beats their worst by more than `min_gap` (ties teach nothing and are dropped)."""
    groups = _groups(scores, candidates)
    offsets = torch.arange(groups.shape[0], device=scores.device) * candidates
    best, worst = groups.argmax(1), groups.argmin(1)
    keep = (groups.max(1).values - groups.min(1).values) > min_gap
    return (offsets + best)[keep], (offsets + worst)[keep]


def all_pairs(scores: torch.Tensor, candidates: int, min_gap: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (winners, losers) of every ordered pair of candidates of the same prompt whose scores differ by
    more than `min_gap` (the better one first), prompt-major: up to n(n-1)/2 pairs from a group of n, where
    `best_and_worst` takes one (as InstructGPT's reward model trains on every comparison of a ranking)."""
    groups = _groups(scores, candidates)
    prompt, better, worse = torch.nonzero(groups[:, :, None] - groups[:, None, :] > min_gap, as_tuple=True)
    return prompt * candidates + better, prompt * candidates + worse


def advantage_weights(advantages: torch.Tensor, clip: float, negative_weight: float) -> torch.Tensor:
    """Weights of advantage-weighted matching: the advantages clipped to [-clip, clip], the negative ones scaled by
    `negative_weight` (0: only better-than-average samples are learned; 1: symmetric)."""
    clipped = advantages.float().clamp(-clip, clip)
    return torch.where(clipped < 0, clipped * negative_weight, clipped)


def implicit_policy(output: torch.Tensor, old: torch.Tensor, beta: float) -> torch.Tensor:
    """DiffusionNFT's implicit policies: old + beta (output - old), the positive one for beta > 0
    ((1 - beta) v_old + beta v), the negative one for -beta ((1 + beta) v_old - beta v)."""
    return old + beta * (output - old)


def optimality_probability(advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """DiffusionNFT's r in [0, 1]: 0.5 + 0.5 clip(A / clip, -1, 1), so the group's average sample is 0.5 (half
    positive, half negative) and a sample `clip` stds above it is wholly positive."""
    return 0.5 + 0.5 * (advantages.float() / clip).clamp(-1, 1)


def nft_loss(positive_losses: torch.Tensor, negative_losses: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """mean_i r_i L_i(v+) + (1 - r_i) L_i(v-): each sample's denoising loss of the positive implicit policy,
    weighted by its optimality probability, and of the negative one by the rest. Its minimum in v is
    v_old + ((2r - 1) / beta) (v* - v_old): the old policy moved towards a good sample's target and away from a
    bad one's, by a bounded step, so unlike the advantage-weighted loss it has a floor."""
    r = r.to(positive_losses.device)
    return (r * positive_losses.float() + (1 - r) * negative_losses.float()).mean()


def weighted_matching_loss(per_image_losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_i w_i L_i: lowering a positive sample's denoising error raises its likelihood, raising a negative
    one's lowers it (AWM); with all w_i = 1 it is the pretraining loss."""
    return (weights.to(per_image_losses.device) * per_image_losses.float()).mean()
