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


def _per_sample(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return sigma.view(-1, *([1] * (like.ndim - 1))) if sigma.ndim else sigma


def predict_x0(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 from a flow velocity: x_t - sigma v (sigma = t)."""
    return x_t - _per_sample(sigma, x_t) * velocity


# Below this noise level x0 -> velocity divides by almost nothing; JiT (Li & He, 2025) clips the same way.
MIN_SIGMA = 0.05


def output_to_velocity(output, x_t, sigma, prediction_type: str, min_sigma: float = MIN_SIGMA) -> torch.Tensor:
    """The flow velocity from a model output that is either the velocity itself or the clean sample x0.

    Training clips sigma at MIN_SIGMA (the loss weight 1/sigma^2 would explode); a sampler passes a tiny
    `min_sigma`, since an Euler step from sigma to sigma' with the exact velocity lands on the interpolation
    between x_t and x0 whatever sigma is."""
    if prediction_type == "velocity":
        return output
    if prediction_type == "sample":
        return (x_t - output) / _per_sample(sigma, x_t).clamp(min=min_sigma)
    raise ValueError(f"prediction_type={prediction_type!r}; expected 'velocity' or 'sample'")


def output_to_x0(output, x_t, sigma, prediction_type: str) -> torch.Tensor:
    """The clean-sample estimate from a model output (what the reward models score during fine-tuning)."""
    if prediction_type == "sample":
        return output
    return predict_x0(x_t, output, sigma)


def flow_loss(
    output,
    x0,
    noise,
    t,
    prediction_type: str,
    space: str = "velocity",
    per_image: bool = False,
) -> torch.Tensor:
    """Rectified-flow loss measured in velocity space (as SD3; with x-prediction, as JiT) or in x0 space.

    They differ only in how they weight noise levels: the velocity error of an x0 prediction is its x0 error
    over t, so velocity space stresses low noise (fine detail) and x0 space high noise, where the layout and the
    binding of colours to shapes are decided.

    `per_image` returns one loss per image instead of the mean (Diffusion-DPO compares images).
    """

    def mean(error: torch.Tensor) -> torch.Tensor:
        return error.flatten(1).mean(1) if per_image else error.mean()

    x_t = flow_interpolate(x0, noise, t)
    if space == "x0":
        return mean((output_to_x0(output, x_t, t, prediction_type) - x0).square())
    if space == "velocity":
        velocity = output_to_velocity(output, x_t, t, prediction_type)
        return mean((velocity - flow_target(x0, noise)).square())
    raise ValueError(f"loss space {space!r}; expected 'velocity' or 'x0'")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)


def ema_decay(step: int, max_decay: float, warmup: float = 10.0) -> float:
    """EMA decay that grows with the step count (1 - (1+step)/(warmup+step)), so early averages aren't stale."""
    return min(max_decay, (1 + step) / (warmup + step))
