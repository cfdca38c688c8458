"""Learning-rate schedules as pure functions of the step (multiply the peak learning rate by them)."""

from __future__ import annotations

import math


def cosine_factor(step: int, total: int, warmup: int = 0, floor: float = 0.0) -> float:
    """The learning-rate factor at `step` (0-based) of `total`: a linear warm-up to 1 over the first `warmup`
    steps, then a cosine decay to `floor` at step `total` (held there after it)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
