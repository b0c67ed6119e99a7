"""Image statistics that expose reward hacking: over-saturation, brightness drift, colour collapse.

All take images (B, 3, H, W) in [0, 1] and return (B,) tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def saturation(images: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation, (max - min) / max per pixel (0 for black pixels), in [0, 1]."""
    mx, mn = images.amax(1), images.amin(1)
    return ((mx - mn) / mx.clamp(min=1e-6)).mean(dim=(1, 2))


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean Rec. 601 luma in [0, 1]."""
    w = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    return (images * w).sum(1).mean(dim=(1, 2))


def colour_entropy(images: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """Entropy in bits of the bins^3 RGB histogram: 0 for a flat image, 3 log2(bins) (6 for 4 bins) at most."""
    q = (images.clamp(0, 1) * (bins - 1e-6)).long()
    idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = F.one_hot(idx.flatten(1), bins**3).float().mean(1)
    return -(hist * hist.clamp(min=1e-12).log2()).sum(-1)


STATS = {"saturation": saturation, "brightness": brightness, "colour_entropy": colour_entropy}


def image_stats(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every statistic by name, per image."""
    return {name: fn(images.float()) for name, fn in STATS.items()}
