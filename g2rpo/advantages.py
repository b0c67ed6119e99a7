"""Rewards -> advantages: small pure functions (algorithms.md §3.3, §4, §5)."""
from __future__ import annotations

import torch


def group_zscore(r: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(r - mean) / (std + eps) over the last dim (the group), unbiased std (n - 1), as G2RPO and DanceGRPO."""
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True, unbiased=True) + eps)


def global_std_advantage(r: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Flow-GRPO's `global_std`: (r - mean over the same prompt) / (population std of every reward of the round + eps).

    ``r`` is (P, G): P prompts, G samples each.
    """
    return (r - r.mean(-1, keepdim=True)) / (r.std(unbiased=False) + eps)


def per_group_std_advantage(r: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Flow-GRPO with `global_std` off: per-prompt mean and population std."""
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True, unbiased=False) + eps)


def combine(advantages: dict[str, torch.Tensor], weights: dict[str, float], normalise: bool = False) -> torch.Tensor:
    """Sum_m w_m A_m over reward models; with ``normalise`` the weights are divided by their sum (MixGRPO)."""
    if set(advantages) != set(weights):
        raise ValueError(f"advantages for {sorted(advantages)} but weights for {sorted(weights)}")
    total = sum(weights.values()) if normalise else 1.0
    return sum(weights[m] / total * a for m, a in advantages.items())


def clamp(adv: torch.Tensor, adv_clip_max: float) -> torch.Tensor:
    """Clamp to [-adv_clip_max, adv_clip_max]."""
    return adv.clamp(-adv_clip_max, adv_clip_max)
