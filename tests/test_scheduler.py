"""FlowMatchEtaScheduler: eta 0 is diffusers' Euler step, eta 1 its stochastic step, in between a mix."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from itercomp.models.scheduler import FlowMatchEtaScheduler, eta_step


def _run(scheduler, seed=0, steps=5):
    torch.manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = torch.randn(2, 3, 4, 4)
    for i, t in enumerate(scheduler.timesteps):
        v = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(100 + i))
        noise = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
        x = scheduler.step(v, t, x, generator=noise).prev_sample
    return x


def test_eta_0_is_the_euler_step_and_eta_1_is_diffusers_stochastic_sampling():
    assert torch.equal(_run(FlowMatchEtaScheduler(shift=2.0)), _run(FlowMatchEulerDiscreteScheduler(shift=2.0)))
    stochastic = _run(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True))
    assert torch.allclose(_run(FlowMatchEtaScheduler(eta=1.0)), stochastic, atol=1e-6)
    assert not torch.allclose(_run(FlowMatchEtaScheduler(eta=0.5)), stochastic)


def test_eta_step_keeps_the_clean_estimate_and_the_noise_level():
    x0, eps, z = torch.randn(3, 1000), torch.randn(3, 1000), torch.randn(3, 1000)
    sigma, sigma_next = 0.8, 0.6
    x = (1 - sigma) * x0 + sigma * eps
    velocity = eps - x0
    for eta in (0.0, 0.7):
        out = eta_step(x, velocity, sigma, sigma_next, eta, z)
        mixed = (1 - eta**2) ** 0.5 * eps + eta * z  # unit variance: the marginal stays at noise level sigma_next
        assert torch.allclose(out, (1 - sigma_next) * x0 + sigma_next * mixed, atol=1e-6)
    assert torch.allclose(eta_step(x, velocity, sigma, 0.0, 0.7, z), x0, atol=1e-6)  # the last step lands on x0


def test_eta_round_trips_and_bad_values_are_refused(tmp_path):
    FlowMatchEtaScheduler(shift=3.0, eta=0.7).save_pretrained(tmp_path)
    loaded = FlowMatchEtaScheduler.from_pretrained(tmp_path)
    assert (loaded.config.eta, loaded.config.shift) == (0.7, 3.0)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        FlowMatchEtaScheduler(eta=1.5)
    with pytest.raises(ValueError, match="not both"):
        FlowMatchEtaScheduler(eta=0.5, stochastic_sampling=True)
