"""Rewards -> advantages: small pure functions (algorithms.md §3.3, §4, §5).

Non-finite rewards (a reward model failing on some images) are left out: they do not enter any mean or
std, and their advantage is 0. A group with fewer than two finite rewards gets advantage 0 throughout.
With all rewards finite every function is exactly the official formula.
"""
from __future__ import annotations

import torch


def _moments(r: torch.Tensor, dim, unbiased: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, std, count) of the finite entries of ``r`` over ``dim`` (None = all), keepdims."""
    ok = torch.isfinite(r)
    dims = tuple(range(r.ndim)) if dim is None else (dim,)
    n = ok.sum(dims, keepdim=True)
    r0 = torch.where(ok, r, 0.0)
    mean = r0.sum(dims, keepdim=True) / n.clamp(min=1)
    var = torch.where(ok, (r0 - mean) ** 2, 0.0).sum(dims, keepdim=True) / (n - int(unbiased)).clamp(min=1)
    return mean, var.sqrt(), n


def _standardise(r, mean_dim, std_dim, unbiased: bool, eps: float) -> torch.Tensor:
    if torch.isfinite(r).all():  # the official computation, bit for bit
        std = r.std(unbiased=unbiased) if std_dim is None else r.std(std_dim, keepdim=True, unbiased=unbiased)
        return (r - r.mean(mean_dim, keepdim=True)) / (std + eps)
    mean, _, n = _moments(r, mean_dim, unbiased)
    _, std, n_std = _moments(r, std_dim, unbiased)
    usable = torch.isfinite(r) & (n >= 2) & (n_std >= 2)
    return torch.where(usable, (torch.where(usable, r, 0.0) - mean) / (std + eps), 0.0)


def group_zscore(r: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(r - mean) / (std + eps) over the last dim (the group), unbiased std (n - 1), as G2RPO and DanceGRPO."""
    return _standardise(r, -1, -1, True, eps)


def global_std_advantage(r: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Flow-GRPO's `global_std`: (r - mean over the same prompt) / (population std of every reward of the round + eps).

    ``r`` is (P, G): P prompts, G samples each.
    """
    return _standardise(r, -1, None, False, eps)


def per_group_std_advantage(r: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Flow-GRPO with `global_std` off: per-prompt mean and population std."""
    return _standardise(r, -1, -1, False, eps)


def combine(advantages: dict[str, torch.Tensor], weights: dict[str, float], normalise: bool = False) -> torch.Tensor:
    """Sum_m w_m A_m over reward models; with ``normalise`` the weights are divided by their sum (MixGRPO)."""
    if set(advantages) != set(weights):
        raise ValueError(f"advantages for {sorted(advantages)} but weights for {sorted(weights)}")
    total = sum(weights.values()) if normalise else 1.0
    return sum(weights[m] / total * a for m, a in advantages.items())


def clamp(adv: torch.Tensor, adv_clip_max: float) -> torch.Tensor:
    """Clamp to [-adv_clip_max, adv_clip_max]."""
    return adv.clamp(-adv_clip_max, adv_clip_max)


def flat_group_share(rewards: dict[str, torch.Tensor], group: torch.Tensor, tol: float = 1e-6) -> float:
    """Share of groups (the images of one prompt, ``group`` its index per image) in which every reward's finite values
    are equal, so every advantage of the group is 0 and it gives no gradient: GRPO's known failure on binary rewards
    (all 8 pass or all 8 fail). 0 when there are no groups."""
    ids = group.unique()
    flat = 0
    for g in ids.tolist():
        vals = [r[group == g] for r in rewards.values()]
        vals = [v[torch.isfinite(v)] for v in vals]
        flat += all(v.numel() < 2 or float(v.max() - v.min()) <= tol for v in vals)
    return flat / len(ids) if len(ids) else 0.0
