"""MixGRPO (algorithms.md §6): Flow-SDE only inside a sliding window of steps, ODE elsewhere; only the window trains."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from g2rpo import advantages as A
from g2rpo.config import OptimConfig, SharedConfig
from g2rpo.ema import EMAConfig
from g2rpo.method import Cost
from g2rpo.sde import flow_sde_g

from .trajectory import TrajectoryMethod


@dataclass
class MixGRPOConfig:
    """Method knobs of MixGRPO; defaults are its official FLUX settings (its own N = 25 is a shared setting here)."""

    eta: float = 0.7
    """a, the Flow-SDE noise level inside the window."""
    window_size: int = 4
    """Consecutive SDE (and trained) steps."""
    window_shift_every: int = 25
    """Rounds between moves of the window by one step; it starts at step 0."""
    window_max_start: int | None = None
    """Last start position of the window; None = N - window_size (the window stops at the end of the schedule)."""
    clip_range: float = 1e-4
    """PPO ratio clip epsilon."""
    adv_clip_max: float = 5.0
    """Advantages are clamped to +-adv_clip_max."""
    gradient_accumulation_steps: int = 12
    """Samples accumulated into one optimizer step (as DanceGRPO, whose trainer MixGRPO extends)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, weight_decay=1e-4, max_grad_norm=1.0))
    """AdamW settings."""
    ema: EMAConfig | None = None
    """EMA of the weights for evaluation (g2rpo.ema.EMAConfig); None = live weights, as the DanceGRPO code."""


class MixGRPO(TrajectoryMethod):
    name = "mixgrpo"

    def __init__(self, cfg: MixGRPOConfig | None = None) -> None:
        self.cfg = cfg or MixGRPOConfig()
        self.optim = self.cfg.optim

    def validate(self, shared: SharedConfig) -> None:
        super().validate(shared)
        if not 1 <= self.cfg.window_size <= shared.num_steps:
            raise ValueError(f"window_size must be in [1, N={shared.num_steps}], got {self.cfg.window_size}")
        if self.cfg.window_shift_every < 1:
            raise ValueError("window_shift_every must be >= 1")

    def window_start(self, n_steps: int, round_idx: int) -> int:
        last = self.cfg.window_max_start if self.cfg.window_max_start is not None else n_steps - self.cfg.window_size
        return min(round_idx // self.cfg.window_shift_every, last)

    def candidate_steps(self, n_steps, round_idx):
        s = self.window_start(n_steps, round_idx)
        return list(range(s, s + self.cfg.window_size))

    def step_g(self, sigmas, round_idx):
        n = len(sigmas) - 1
        g = torch.zeros(n)
        w = self.candidate_steps(n, round_idx)
        g[w] = flow_sde_g(sigmas[w], float(sigmas[1]), self.cfg.eta)
        return g

    def samples_per_step(self, n_samples):
        return self.cfg.gradient_accumulation_steps

    def sample_advantages(self, rewards, weights):
        adv = A.combine({m: A.group_zscore(r) for m, r in rewards.items()}, weights, normalise=True)
        return A.clamp(adv, self.cfg.adv_clip_max)

    def cost(self, shared):
        G = shared.num_generations
        return Cost(nfe_rollout=G * shared.num_steps, nfe_train=G * self.cfg.window_size, images_scored=G)
