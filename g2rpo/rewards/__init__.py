"""Reward models: one call signature, batched, deterministic, with declared units and scale.

A reward maps images (B, 3, H, W) in [0, 1] and their prompts to a (B,) float32 tensor.
"""
from __future__ import annotations

import contextlib

import torch


class Reward:
    """Base class. Subclasses set the class attributes and implement ``score``."""

    name: str = "reward"
    units: str = ""
    """What one unit means, e.g. 'cosine similarity' or 'mean pixel value in [0, 1]'."""
    scale: str = ""
    """Typical range of the score, e.g. '[-1, 1], ~0.3 for a good image'."""
    checkpoint: str = ""
    """Identity of the weights (path and sha256), '' for rewards without weights."""
    autocast: str | None = None
    """'fp16': score under fp16 autocast on the network's device, as the official HPS scoring; None (default): off."""

    @property
    def device(self) -> torch.device:
        """Where the reward's network (``self.model``) runs; the CPU for rewards without one."""
        model = getattr(self, "model", None)
        if isinstance(model, torch.nn.Module):
            for t in model.parameters():
                return t.device
        return torch.device("cpu")

    def to(self, device) -> Reward:
        """Run the network on ``device``; images are moved there and scores come back on the CPU."""
        model = getattr(self, "model", None)
        if isinstance(model, torch.nn.Module):
            model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: images must be (B, 3, H, W), got {tuple(images.shape)}")
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{self.name}: {images.shape[0]} images but {len(prompts)} prompts")
        with self._autocast():
            scores = self.score(images.float(), prompts)
        return scores.float().reshape(-1).cpu()

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        if self.autocast != "fp16":
            raise ValueError(f"{self.name}: autocast must be None or 'fp16', got {self.autocast!r}")
        return torch.autocast(device_type=self.device.type, dtype=torch.float16)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        out = {"name": self.name, "units": self.units, "scale": self.scale, "checkpoint": self.checkpoint}
        return out | ({"autocast": self.autocast} if self.autocast else {})


class Brightness(Reward):
    """Mean pixel value: a deterministic, weight-free reward for tests and smoke runs."""

    name = "brightness"
    units = "mean pixel value"
    scale = "[0, 1]"

    def score(self, images, prompts):
        return images.mean(dim=(1, 2, 3))


class ChannelContrast(Reward):
    """Red minus blue mean: a second weight-free reward pulling in another direction, for tests."""

    name = "redness"
    units = "mean(R) - mean(B)"
    scale = "[-1, 1]"

    def score(self, images, prompts):
        return images[:, 0].mean(dim=(1, 2)) - images[:, 2].mean(dim=(1, 2))


class Contrast(Reward):
    """Pixel standard deviation: a weight-free out-of-domain reward for the tiny tier."""

    name = "contrast"
    units = "std of pixel values"
    scale = "[0, 0.5]"

    def score(self, images, prompts):
        return images.flatten(1).std(1)
