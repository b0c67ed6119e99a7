"""Schedules and the SDE step against closed forms (algorithms.md §1, §2)."""
import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from g2rpo.schedules import coarse_completion_grid, flow_match_sigmas, model_timestep, shifted_sigmas
from g2rpo.sde import dance_sde_g, euler_step, flow_sde_g, predict_x0, sde_step

SIGMAS_16 = [1, .9783, .9545, .9286, .9000, .8684, .8333, .7941, .7500, .7000, .6429, .5769, .5000, .4091, .3000, .1667, 0]


def test_shifted_sigmas_match_table():
    s = shifted_sigmas(16, 3.0)
    assert torch.allclose(s, torch.tensor(SIGMAS_16), atol=5e-5)
    assert s[0] == 1 and s[-1] == 0


def test_flow_match_sigmas_are_diffusers_grid_with_zero():
    s = flow_match_sigmas(10, 3.0)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(10)
    assert len(s) == 11 and s[-1] == 0
    assert torch.equal(s[:-1], sched.timesteps / 1000)


def test_timestep_truncation_is_pythons_int():
    s = shifted_sigmas(16, 3.0)
    t = model_timestep(s, "truncate3")
    # int() of the fp32 tensor product, as the official code (not of the fp64 product float(x) * 1000)
    assert t.tolist() == pytest.approx([int(x * 1000) / 1000 for x in s], abs=1e-7)
    assert torch.equal(model_timestep(s, "float"), s)


def test_injected_noise_std_closed_form():
    s = shifted_sigmas(16, 3.0)
    g = flow_sde_g(s[:-1], float(s[1]), 0.7)
    std = g * torch.sqrt(s[:-1] - s[1:])
    assert std[0].item() == pytest.approx(0.700, abs=5e-4)
    assert std[1].item() == pytest.approx(0.723, abs=5e-4)
    assert std[7].item() == pytest.approx(0.289, abs=5e-4)
    assert torch.all(dance_sde_g(s[:-1], 0.3) == 0.3)


def test_log_prob_is_mean_gaussian_density():
    torch.manual_seed(0)
    x, v, z = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    sigma, sigma_next, g = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.8, 0.45, 0.1]), torch.tensor([0.7, 0.3, 1.2])
    out = sde_step(x, v, sigma, sigma_next, g, noise=z)
    std = (g * torch.sqrt(sigma - sigma_next)).view(3, 1, 1, 1)
    dt = (sigma_next - sigma).view(3, 1, 1, 1)
    s = sigma.view(3, 1, 1, 1)
    mean = x + dt * v + dt * (g.view(3, 1, 1, 1) ** 2 / (2 * s)) * (x + (1 - s) * v)
    ref = torch.distributions.Normal(mean, std).log_prob(out.sample).mean(dim=(1, 2, 3))
    assert torch.allclose(out.mean, mean, atol=1e-6)
    assert torch.allclose(out.sample, mean + std * z, atol=1e-6)
    assert torch.allclose(out.log_prob, ref, atol=1e-5)
    rescored = sde_step(x, v, sigma, sigma_next, g, next_sample=out.sample)
    assert torch.equal(rescored.log_prob, out.log_prob)


def test_g_zero_is_euler_and_matches_diffusers():
    torch.manual_seed(1)
    sigmas = shifted_sigmas(8, 3.0)
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=sigmas[:-1].tolist())
    x = torch.randn(2, 3, 4, 4)
    for i, t in enumerate(sched.timesteps):
        v = torch.randn_like(x)
        ours = sde_step(x, v, sigmas[i], sigmas[i + 1], torch.tensor(0.0))
        assert torch.equal(ours.log_prob, torch.zeros(2))
        assert torch.equal(ours.sample, euler_step(x, v, sigmas[i], sigmas[i + 1]))
        theirs = sched.step(v, t, x, return_dict=False)[0]
        assert torch.allclose(ours.sample, theirs, atol=1e-6)
        x = theirs
    assert torch.allclose(predict_x0(x, torch.zeros_like(x), 0.5), x)


@pytest.mark.parametrize("lam", [1, 2, 3])
@pytest.mark.parametrize("end_at_zero", [False, True])
def test_coarse_grid_counts_and_endpoints(lam, end_at_zero):
    n, s = 16, shifted_sigmas(16, 3.0)
    for k in range(n - 1):
        grid = coarse_completion_grid(s, k, lam, end_at_zero)
        evals = len(grid) - 1
        assert grid[0] == s[k + 1] and (len(grid) < 2 or grid[1] == s[k + 2])
        skipped_zero = (n - 2 - k) % lam != 0
        assert evals == math.ceil((n - 1 - k) / lam) + (1 if end_at_zero and skipped_zero else 0)
        assert (grid[-1] == 0) == (end_at_zero or not skipped_zero)
    with pytest.raises(ValueError):
        coarse_completion_grid(s, n - 1, 1)


def test_official_quirk_example():
    # N = 16, k = 0, lambda = 3: sigma[1] ⊕ sigma[2::3] = sigma 1, 2, 5, 8, 11, 14 (16 is skipped)
    s = shifted_sigmas(16, 3.0)
    grid = coarse_completion_grid(s, 0, 3)
    assert torch.equal(grid, s[[1, 2, 5, 8, 11, 14]])
