"""`FlowMatchEtaScheduler`: diffusers' flow-matching Euler scheduler with DDIM's eta, a share of fresh noise per step.

At noise level s the model's velocity v gives the clean-image estimate x0 = x - s v and the noise estimate
eps = x + (1 - s) v. The step to s' keeps x0 and re-mixes the noise:

    x' = (1 - s') x0 + s' (sqrt(1 - eta^2) eps + eta z),   z ~ N(0, I) fresh

eta 0 is the Euler (ODE) step; eta 1 is diffusers' `stochastic_sampling` (all noise fresh). In between, the fresh
noise lets later steps correct what earlier ones got wrong while the estimate's own noise keeps the trajectory.
`eta_below` limits the fresh noise to the steps that end below that noise level: the steps above follow the ODE, so
the layout the first steps draw is kept while the later steps still correct the details.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor


def fresh_noise(config) -> dict:
    """How a flow-matching scheduler's config draws fresh noise: its `eta` (diffusers' `stochastic_sampling` is
    eta 1 for a plain `FlowMatchEulerDiscreteScheduler`) and `eta_below` (1: on every step)."""
    return {"eta": config.get("eta", 1.0 if config.get("stochastic_sampling") else 0.0),
            "eta_below": config.get("eta_below", 1.0)}  # fmt: skip


def eta_step(sample, velocity, sigma, sigma_next, eta: float, noise):
    """One step from noise level `sigma` to `sigma_next` with a share `eta` of fresh `noise` (see the module)."""
    x0 = sample - sigma * velocity
    eps = sample + (1 - sigma) * velocity
    return (1 - sigma_next) * x0 + sigma_next * ((1 - eta**2) ** 0.5 * eps + eta * noise)


# diffusers loads a pipeline component of another library by looking its base class up in that module, so
# model_index.json's `itercomp.models.scheduler` must hold `SchedulerMixin`.
__all__ = ["FlowMatchEtaScheduler", "SchedulerMixin", "eta_step", "fresh_noise"]


class FlowMatchEtaScheduler(FlowMatchEulerDiscreteScheduler):
    """`FlowMatchEulerDiscreteScheduler` (every option of it) plus `eta` in [0, 1]: the share of each step's noise
    drawn fresh, from the `generator` given to `step` (diffusers' pipelines pass theirs), on the steps that end
    below the noise level `eta_below` (in (0, 1]; 1: every step)."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        invert_sigmas: bool = False,
        shift_terminal: float | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        time_shift_type: str = "exponential",
        stochastic_sampling: bool = False,
        eta: float = 0.0,
        eta_below: float = 1.0,
    ):
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1] (0 = the Euler ODE step, 1 = all noise fresh), got {eta}")
        if not 0.0 < eta_below <= 1.0:
            raise ValueError(
                f"eta_below must be a noise level in (0, 1] (1 = fresh noise on every step), got {eta_below}"
            )
        if stochastic_sampling and (eta or eta_below < 1):
            raise ValueError("set eta (and eta_below) or stochastic_sampling, not both (stochastic_sampling is eta 1)")
        options = {k: v for k, v in locals().items() if k not in ("self", "eta", "eta_below", "__class__")}
        super().__init__(**options)

    def step(self, model_output, timestep, sample, *args, generator=None, return_dict: bool = True, **kwargs):
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        eta = self.config.eta if sigma_next < self.config.eta_below else 0.0
        if not eta or kwargs.get("per_token_timesteps") is not None:
            return super().step(model_output, timestep, sample, *args, generator=generator, return_dict=return_dict,
                                **kwargs)  # fmt: skip
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)
        prev = eta_step(sample.float(), model_output.float(), sigma, sigma_next, eta, noise)
        self._step_index += 1
        prev = prev.to(model_output.dtype)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev) if return_dict else (prev,)
