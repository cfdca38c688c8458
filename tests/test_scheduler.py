"""FlowMatchEtaScheduler: eta 0 is diffusers' Euler step, eta 1 its stochastic step, in between a mix."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from itercomp.models.scheduler import FlowMatchEtaScheduler, eta_step, fresh_noise


def _run(scheduler, seed=0, steps=5, trajectory=False):
    torch.manual_seed(seed)
    scheduler.set_timesteps(steps)
    x, xs = torch.randn(2, 3, 4, 4), []
    for i, t in enumerate(scheduler.timesteps):
        v = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(100 + i))
        noise = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
        x = scheduler.step(v, t, x, generator=noise).prev_sample
        xs.append(x)
    return xs if trajectory else x


def test_eta_0_is_the_euler_step_and_eta_1_is_diffusers_stochastic_sampling():
    assert torch.equal(_run(FlowMatchEtaScheduler(shift=2.0)), _run(FlowMatchEulerDiscreteScheduler(shift=2.0)))
    stochastic = _run(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True))
    assert torch.allclose(_run(FlowMatchEtaScheduler(eta=1.0)), stochastic, atol=1e-6)
    assert not torch.allclose(_run(FlowMatchEtaScheduler(eta=0.5)), stochastic)


def test_eta_below_draws_fresh_noise_only_on_the_steps_that_end_below_it():
    # 5 steps: noise levels 1 -> 0.75 -> 0.5005 -> 0.25 -> 0.001 -> 0; with eta_below 0.5 the first two are Euler
    euler = _run(FlowMatchEtaScheduler(), trajectory=True)
    late = _run(FlowMatchEtaScheduler(eta=0.7, eta_below=0.5), trajectory=True)
    assert all(torch.equal(a, b) for a, b in zip(euler[:2], late[:2]))
    assert not torch.allclose(euler[2], late[2])
    everywhere = _run(FlowMatchEtaScheduler(eta=0.7), trajectory=True)
    assert torch.equal(_run(FlowMatchEtaScheduler(eta=0.7, eta_below=1.0)), everywhere[-1])
    assert not torch.allclose(everywhere[0], euler[0])


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
    FlowMatchEtaScheduler(shift=3.0, eta=0.7, eta_below=0.6).save_pretrained(tmp_path)
    loaded = FlowMatchEtaScheduler.from_pretrained(tmp_path)
    assert (loaded.config.eta, loaded.config.eta_below, loaded.config.shift) == (0.7, 0.6, 3.0)
    assert fresh_noise(loaded.config) == {"eta": 0.7, "eta_below": 0.6}
    assert fresh_noise(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True).config) == {
        "eta": 1.0,
        "eta_below": 1.0,
    }
    with pytest.raises(ValueError, match=r"eta_below must be a noise level in \(0, 1\]"):
        FlowMatchEtaScheduler(eta=0.7, eta_below=0.0)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        FlowMatchEtaScheduler(eta=1.5)
    with pytest.raises(ValueError, match="not both"):
        FlowMatchEtaScheduler(eta=0.5, stochastic_sampling=True)
    with pytest.raises(ValueError, match="not both"):
        FlowMatchEtaScheduler(eta_below=0.5, stochastic_sampling=True)
