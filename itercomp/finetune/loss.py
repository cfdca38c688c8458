"""The math of reward feedback as small pure functions: the hinge loss over aspects, the gradient window, and the
choice among candidates (select mode)."""

from __future__ import annotations

import math

import numpy as np
import torch


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
