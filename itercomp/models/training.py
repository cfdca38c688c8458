"""The math of base-model training as small pure functions (rectified flow, as SD3)."""

from __future__ import annotations

import torch


def sample_timesteps(batch: int, generator=None, mean: float = 0.0, std: float = 1.0, device="cpu") -> torch.Tensor:
    """Logit-normal t in (0, 1): more weight on the middle of the path, where composition is decided."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=device))


def flow_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise: the straight path from data (t = 0) to noise (t = 1)."""
    t = t.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - t) * x0 + t * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity d x_t / d t the model learns to predict."""
    return noise - x0


def predict_x0(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 from a flow velocity: x_t - sigma v (sigma = t)."""
    sigma = sigma.view(-1, *([1] * (x_t.ndim - 1))) if sigma.ndim else sigma
    return x_t - sigma * velocity


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)


def ema_decay(step: int, max_decay: float, warmup: float = 10.0) -> float:
    """EMA decay that grows with the step count (1 - (1+step)/(warmup+step)), so early averages aren't stale."""
    return min(max_decay, (1 + step) / (warmup + step))
