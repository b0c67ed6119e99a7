"""Flow-GRPO-Fast: Flow-GRPO's trainer with Flow-SDE only inside a random window of steps, ODE elsewhere; only the
window's transitions are stored and trained (official ``sde_window_size`` / ``sde_window_range``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from g2rpo.method import Cost

from .flowgrpo import FlowGRPO, FlowGRPOConfig
from .trajectory import window_g


@dataclass
class FlowGRPOFastConfig(FlowGRPOConfig):
    """Flow-GRPO's knobs (``timestep_fraction`` unused: the window is what trains) and the window's; defaults are the
    official code's (``config/base.py``, the fast presets of ``config/grpo.py``)."""

    sde_window_size: int = 2
    """SDE (and trained) steps per sample (official `sample.sde_window_size`); 0 = SDE on steps 0..N-2, last one ODE."""
    sde_window_range: tuple[int, int] | None = None
    """Steps [lo, hi) the window lies in, start uniform in lo..hi-size (official `sample.sde_window_range`); None =
    (0, N // 2) of the rollout's N steps, as every official fast preset sets it."""


def uniform_ints(z: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Integers uniform in lo..hi (inclusive, as ``random.randint``) from standard normals ``z``: floor of Phi(z)."""
    u = 0.5 * (1 + torch.erf(z.double() / math.sqrt(2)))
    return lo + (u * (hi - lo + 1)).long().clamp(0, hi - lo)


class FlowGRPOFast(FlowGRPO):
    name = "flowgrpo-fast"
    config_class = FlowGRPOFastConfig
    cfg: FlowGRPOFastConfig

    def window_range(self, n_steps: int) -> tuple[int, int]:
        r = self.cfg.sde_window_range
        return (0, n_steps // 2) if r is None else (int(r[0]), int(r[1]))

    def validate(self, shared):
        super().validate(shared)
        size, n = self.cfg.sde_window_size, self.cfg.num_rollout_steps or shared.num_steps
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"sde_window_size must be an integer >= 0, got {size!r}")
        lo, hi = self.window_range(n)
        if size and not 0 <= lo <= lo + size <= hi <= n:
            raise ValueError(f"sde_window_range {(lo, hi)} must hold a window of {size} steps within 0..N={n}")
        if not size and n < 2:
            raise ValueError("sde_window_size=0 trains steps 0..N-2, so N must be >= 2")

    def plan(self, sigmas, round_idx, noise, prompts, generations):
        """Per sample, as the official pipeline draws one window per call (a batch of a few samples, per GPU): start
        uniform in lo..hi-size from the rollout's per-prompt noise stream, so any world size draws the same."""
        n, size = len(sigmas) - 1, self.cfg.sde_window_size
        if size == 0:  # official: window (0, N-1), the last step deterministic
            steps = torch.arange(n - 1).expand(prompts * generations, n - 1)
        else:
            lo, hi = self.window_range(n)
            start = uniform_ints(noise((generations,), dim=0).reshape(-1), lo, hi - size)
            steps = start[:, None] + torch.arange(size)
        return steps, window_g(sigmas, steps, self.cfg.noise_level)

    def trained_per_sample(self, n_steps: int) -> int:
        return self.cfg.sde_window_size or n_steps - 1

    def cost(self, shared):
        G = shared.num_generations
        n = self.cfg.num_rollout_steps or shared.num_steps
        trained = G * self.trained_per_sample(n)  # every step is still a full model evaluation (no early stop)
        return Cost(nfe_rollout=G * n, nfe_train=trained, images_scored=G,
                    nfe_reference=trained if self.cfg.beta > 0 else 0)
