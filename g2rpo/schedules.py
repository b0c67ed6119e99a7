"""Sigma schedules and the model-timestep convention (algorithms.md §1).

Notation: sigma_0 = 1 > ... > sigma_N = 0, x_sigma = (1 - sigma) x0 + sigma eps.
"""
from __future__ import annotations

import enum

import torch


class TimestepConvention(str, enum.Enum):
    """How sigma is turned into the model's timestep input (in [0, 1])."""

    TRUNCATE_3 = "truncate3"
    """int(sigma * 1000) / 1000 in fp32, as the official FLUX RL code (DanceGRPO, MixGRPO, G2RPO) feeds it."""
    FLOAT = "float"
    """sigma as a float, as diffusers' pipelines and Flow-GRPO (SD3.5) feed it."""


def shifted_sigmas(num_steps: int, shift: float = 3.0) -> torch.Tensor:
    """Fixed-shift schedule: s = linspace(1, 0, N+1), sigma = shift*s / (1 + (shift-1)*s), in fp32 with the official
    FLUX RL code's operations and order (``sd3_time_shift`` on an fp32 linspace), so the sigmas of its SDE step and
    the timesteps truncated from them are its own bit for bit (an fp64 computation differs by 1-2 ulp at about half
    the points, which moves a truncated timestep by 0.001 where sigma*1000 is that close to an integer)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32)
    return (shift * s) / (1 + (shift - 1) * s)


def flow_match_sigmas(num_steps: int, shift: float = 3.0) -> torch.Tensor:
    """diffusers' FlowMatchEulerDiscreteScheduler grid (static shift, as SD3.5 / Flow-GRPO), sigma_N = 0 appended."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(num_steps)
    return sched.sigmas.float().clone()


def model_timestep(sigma: torch.Tensor, convention: TimestepConvention | str) -> torch.Tensor:
    """Map sigma to the timestep fed to the model (fraction of 1000); the SDE update always uses exact sigma.

    'truncate3' is the official FLUX code's arithmetic on a given sigma: ``int(sigma * 1000)`` with ``sigma`` an
    fp32 tensor (the product is rounded to fp32 before truncation), then the long timesteps ``/ 1000`` in fp32.
    On ``shifted_sigmas``, which are the official fp32 sigmas, the result is the official timestep exactly.
    """
    convention = TimestepConvention(convention)
    if convention is TimestepConvention.TRUNCATE_3:
        # fp32 multiply (rounded), truncation toward zero, fp32 division: not a floor of the exact or fp64 product
        return torch.trunc(sigma.float() * 1000).div(1000).to(sigma.dtype)
    return sigma


def coarse_completion_grid(sigmas: torch.Tensor, k: int, granularity: int, end_at_zero: bool = False) -> torch.Tensor:
    """Grid an MGAI completion starts on after the SDE step k -> k+1: sigma[k+1] ⊕ sigma[k+2::granularity].

    This is the tail (from sigma_{k+1}) of sigma[0:k+2] ⊕ sigma[k+2::lambda] (algorithms.md §3.2).
    With ``end_at_zero`` a final 0 is appended when the stride skips it (the non-official variant).
    """
    n = len(sigmas) - 1
    if not 0 <= k <= n - 2:
        raise ValueError(f"noise-injection step k={k} must lie in [0, N-2] = [0, {n - 2}]")
    if granularity < 1:
        raise ValueError(f"granularity must be >= 1, got {granularity}")
    grid = torch.cat([sigmas[k + 1 : k + 2], sigmas[k + 2 :: granularity]])
    if end_at_zero and grid[-1] != 0:
        grid = torch.cat([grid, sigmas.new_zeros(1)])
    return grid
