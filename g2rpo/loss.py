"""The clipped policy-gradient loss shared by every method (algorithms.md §3.4)."""
from __future__ import annotations

import torch


def ppo_clip_loss(
    log_prob: torch.Tensor, log_prob_old: torch.Tensor, adv: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)); returns (loss, ratio). No reduction."""
    ratio = torch.exp(log_prob - log_prob_old)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped), ratio


def kl_to_reference(mean: torch.Tensor, mean_ref: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Flow-GRPO's KL: mean((mu - mu_ref)^2) / (2 g^2) per sample, g without the sqrt(-dt) factor (official code)."""
    per = ((mean - mean_ref) ** 2).mean(dim=tuple(range(1, mean.ndim)))
    return per / (2 * g.reshape(-1) ** 2)
