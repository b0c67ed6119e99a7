"""DanceGRPO (algorithms.md §4): Dance-SDE with constant eta on every step, random trained steps per sample."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from g2rpo import advantages as A
from g2rpo.config import MethodConfig, OptimConfig, SharedConfig
from g2rpo.method import Cost
from g2rpo.sde import dance_sde_g

from .trajectory import TrajectoryMethod, check_positive_ints


@dataclass
class DanceGRPOConfig(MethodConfig):
    """Method knobs of DanceGRPO; defaults are its official 16-GPU FLUX script's (``scripts/finetune/finetune_flux_grpo.sh``).

    Its 8-GPU script differs: 2 prompts per GPU, ``gradient_accumulation_steps=12, world_size=8`` (2 steps of 96
    samples per round), ``optim.max_grad_norm=0.01`` and ``ema=EMAConfig(0.995, 1, warmup=False)``.
    """

    eta: float = 0.3
    """Constant diffusion coefficient g of Dance-SDE."""
    timestep_fraction: float = 0.6
    """Each sample trains int(timestep_fraction * (N-1)) of the first N-1 transitions, a fresh random subset per round."""
    ignore_last: bool = True
    """Never train the last transition (official `--ignore_last`)."""
    init_same_noise: bool = True
    """One x_T per group (official `--init_same_noise`)."""
    gradient_accumulation_steps: int = 4
    """Samples per GPU accumulated into one optimizer step (official, per GPU: 4 of the GPU's 12)."""
    world_size: int = 16
    """GPUs whose gradients are averaged into each step: a step trains gradient_accumulation_steps x world_size
    samples (official: 4 x 16 = 64, 3 steps per round of 16 prompts x 12). A property of the recipe, not of how many
    processes run it here."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, weight_decay=1e-4, max_grad_norm=1.0))
    """AdamW settings (official: lr 1e-5, wd 1e-4)."""


class DanceGRPO(TrajectoryMethod):
    name = "dancegrpo"
    image_from_x0_hat = True
    config_class = DanceGRPOConfig
    cfg: DanceGRPOConfig

    def validate(self, shared: SharedConfig) -> None:
        super().validate(shared)
        if not 0 < self.cfg.timestep_fraction <= 1:
            raise ValueError(f"timestep_fraction must be in (0, 1], got {self.cfg.timestep_fraction}")
        if self.cfg.eta <= 0:
            raise ValueError(f"eta must be > 0, got {self.cfg.eta}")
        check_positive_ints(self.cfg, "gradient_accumulation_steps", "world_size")

    def step_g(self, sigmas, round_idx):
        return dance_sde_g(sigmas[:-1], self.cfg.eta)

    def shared_noise(self):
        return self.cfg.init_same_noise

    def candidate_steps(self, n_steps, round_idx):
        return list(range(n_steps - 1 if self.cfg.ignore_last else n_steps))

    def n_trained(self, n_steps: int) -> int:
        return int(self.cfg.timestep_fraction * len(self.candidate_steps(n_steps, 0)))

    def select(self, n_samples, n_steps, gen):
        keep = int(self.cfg.timestep_fraction * n_steps)
        mask = torch.zeros(n_samples, n_steps, dtype=torch.bool)
        for i in range(n_samples):
            mask[i, torch.randperm(n_steps, generator=gen)[:keep]] = True
        return mask

    def samples_per_step(self, n_samples):
        return self.cfg.gradient_accumulation_steps * self.cfg.world_size

    def sample_advantages(self, rewards, weights):
        # DanceGRPO's code has one reward; with several, per-reward group advantages are summed as in G2RPO
        adv = A.combine({m: A.group_zscore(r) for m, r in rewards.items()}, weights)
        return A.clamp(adv, self.cfg.adv_clip_max)

    def cost(self, shared):
        G, n = shared.num_generations, shared.num_steps
        return Cost(nfe_rollout=G * n, nfe_train=G * self.n_trained(n), images_scored=G)
