"""x0 from a denoiser output, per parameterisation, as pure functions (what the reward models score).

Variance-preserving models (SD, SDXL) see x_t = sqrt(abar) x0 + sqrt(1 - abar) eps; flow models (SD3, Flux,
Sana, the shapes DiT) see x_t = (1 - sigma) x0 + sigma eps and predict the velocity eps - x0.
"""

from __future__ import annotations

import torch


def _per_sample(value, like: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.view(-1, *([1] * (like.ndim - 1))) if value.ndim else value


def x0_from_epsilon(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """(x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
    a = _per_sample(alpha_bar, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar) -> torch.Tensor:
    """v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
    a = _per_sample(alpha_bar, x_t)
    return a.sqrt() * x_t - (1 - a).sqrt() * v


def x0_from_flow(x_t: torch.Tensor, velocity: torch.Tensor, sigma) -> torch.Tensor:
    """x_t - sigma v (rectified flow)."""
    return x_t - _per_sample(sigma, x_t) * velocity


def vp_noisy(x0: torch.Tensor, noise: torch.Tensor, alpha_bar) -> torch.Tensor:
    a = _per_sample(alpha_bar, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def vp_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    """What a VP model is trained to output: eps, v or x0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = _per_sample(alpha_bar, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type={prediction_type!r}; expected 'epsilon', 'v_prediction' or 'sample'")


def vp_x0(x_t: torch.Tensor, output: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    if prediction_type == "epsilon":
        return x0_from_epsilon(x_t, output, alpha_bar)
    if prediction_type == "v_prediction":
        return x0_from_v(x_t, output, alpha_bar)
    if prediction_type == "sample":
        return output
    raise ValueError(f"prediction_type={prediction_type!r}; expected 'epsilon', 'v_prediction' or 'sample'")
