"""One stochastic (or deterministic) step of a rectified-flow sampler, with its log-probability.

Every method's rollout and training use this single step (algorithms.md §2):

    mu  = x + dt * [ v + g^2 / (2 sigma) * (x + (1 - sigma) v) ]     dt = sigma_next - sigma < 0
    x'  = mu + g * sqrt(-dt) * z
    log pi(x' | x) = mean over non-batch elements of the Gaussian log-density N(x'; mu, (g sqrt(-dt))^2)

Versus the upstream code: this is Flow-GRPO's ``sde_step_with_logprob`` and DanceGRPO's ``flux_step``
written once, with the diffusion coefficient g passed in instead of hard-coded. g = 0 gives
the plain Euler step x' = x + dt v. Computed in fp32 whatever the model's dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def flow_sde_g(sigma: torch.Tensor, sigma_1: float, a: float = 0.7) -> torch.Tensor:
    """Flow-SDE coefficient g = a * sqrt(sigma / (1 - sigma~)), sigma~ = sigma_1 where sigma = 1 (avoids 1/0)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    safe = torch.where(sigma >= 1.0, torch.full_like(sigma, sigma_1), sigma)
    return a * torch.sqrt(sigma / (1.0 - safe))


def dance_sde_g(sigma: torch.Tensor, eta: float = 0.3) -> torch.Tensor:
    """Dance-SDE coefficient: the constant eta."""
    return torch.full_like(torch.as_tensor(sigma, dtype=torch.float32), eta)


def predict_x0(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Clean estimate x0_hat = x - sigma * v (v approximates eps - x0)."""
    return x.float() - _bcast(sigma, x) * v.float()


@dataclass
class StepOut:
    sample: torch.Tensor
    """x', the next sample (the given one when scoring)."""
    log_prob: torch.Tensor
    """(B,) mean log-density of x' per element; 0 where the step is deterministic (g = 0)."""
    mean: torch.Tensor
    """mu, the step's mean."""
    std: torch.Tensor
    """(B,) g * sqrt(-dt), the injected noise std."""


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    g: torch.Tensor,
    noise: torch.Tensor | None = None,
    next_sample: torch.Tensor | None = None,
) -> StepOut:
    """One step sigma -> sigma_next. Scalars or (B,) tensors for sigma, sigma_next and g.

    Give ``noise`` (z) to sample, or ``next_sample`` to score a stored x' (training). With neither,
    the step is the mean (used for g = 0).
    """
    x, v = x.float(), v.float()
    s, s_next, g_ = _bcast(sigma, x), _bcast(sigma_next, x), _bcast(g, x)
    dt = s_next - s
    mean = x + dt * (v + g_**2 / (2 * s) * (x + (1 - s) * v))
    std = g_ * torch.sqrt(-dt)
    if next_sample is not None:
        sample = next_sample.float()
    elif noise is not None:
        sample = mean + std * noise.float()
    else:
        sample = mean
    std_flat = std.reshape(-1)
    safe_std = torch.where(std > 0, std, torch.ones_like(std))
    elem = -((sample - mean) ** 2) / (2 * safe_std**2) - torch.log(safe_std) - LOG_SQRT_2PI
    log_prob = elem.mean(dim=tuple(range(1, x.ndim)))
    log_prob = torch.where(std_flat > 0, log_prob, torch.zeros_like(log_prob))
    return StepOut(sample=sample, log_prob=log_prob, mean=mean, std=std_flat)


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Deterministic ODE step x' = x + (sigma_next - sigma) v (the g = 0 case, without the g^2/(2 sigma) term at sigma = 0)."""
    x, v = x.float(), v.float()
    return x + (_bcast(sigma_next, x) - _bcast(sigma, x)) * v
