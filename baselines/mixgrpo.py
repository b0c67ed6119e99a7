"""MixGRPO (algorithms.md §6): Flow-SDE only inside a sliding window of steps, ODE elsewhere; only the window trains."""
from __future__ import annotations

from dataclasses import dataclass, field


from g2rpo import advantages as A
from g2rpo.config import MethodConfig, OptimConfig, SharedConfig
from g2rpo.method import Cost

from .trajectory import TrajectoryMethod, check_positive_ints, window_g


@dataclass
class MixGRPOConfig(MethodConfig):
    """Method knobs of MixGRPO; defaults are its official FLUX script's (``finetune_flux_grpo_MixGRPO.sh``: 4 nodes x
    8 GPUs, one prompt per GPU; its own N = 25 is a shared setting here)."""

    eta: float = 0.7
    """a, the Flow-SDE noise level inside the window."""
    window_size: int = 4
    """Consecutive SDE (and trained) steps (official `group_size`)."""
    window_shift_every: int = 25
    """Rounds between moves of the window by one step (official `iters_per_group`, progressive, overlap step 1)."""
    roll_back: bool = True
    """Official `--roll_back`: once the window's start passes N-2 it returns to 0; False = it stays at N-2."""
    gradient_accumulation_steps: int = 3
    """Samples per GPU accumulated into one optimizer step (official: 3 of the GPU's 12)."""
    world_size: int = 32
    """GPUs whose gradients are averaged into each step: a step trains gradient_accumulation_steps x world_size
    samples (official: 3 x 32 = 96, 4 steps per round of 32 prompts x 12). A property of the recipe."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, weight_decay=1e-4, max_grad_norm=1.0))
    """AdamW settings."""


class MixGRPO(TrajectoryMethod):
    name = "mixgrpo"
    config_class = MixGRPOConfig
    cfg: MixGRPOConfig

    def validate(self, shared: SharedConfig) -> None:
        super().validate(shared)
        if shared.num_steps < 3:
            raise ValueError(f"MixGRPO trains steps below N-2, so N must be >= 3, got {shared.num_steps}")
        if not 1 <= self.cfg.window_size <= shared.num_steps:
            raise ValueError(f"window_size must be in [1, N={shared.num_steps}], got {self.cfg.window_size}")
        if self.cfg.window_shift_every < 1:
            raise ValueError("window_shift_every must be >= 1")
        check_positive_ints(self.cfg, "gradient_accumulation_steps", "world_size")

    def window_start(self, n_steps: int, round_idx: int) -> int:
        """The official progressive start: 0, 1, ..., N-2 (one move every window_shift_every rounds), then 0 again
        under roll_back, else N-2 from then on."""
        moves = round_idx // self.cfg.window_shift_every
        return moves % (n_steps - 1) if self.cfg.roll_back else min(moves, n_steps - 2)

    def candidate_steps(self, n_steps, round_idx):
        # the official window ends before step N-2 (its range bound is max_timesteps = N-2), so it narrows at the
        # end of the schedule and is empty at start N-2: such a round samples by ODE and trains nothing
        s = self.window_start(n_steps, round_idx)
        return list(range(s, min(s + self.cfg.window_size, n_steps - 2)))

    def step_g(self, sigmas, round_idx):
        return window_g(sigmas, self.candidate_steps(len(sigmas) - 1, round_idx), self.cfg.eta)

    def samples_per_step(self, n_samples):
        return self.cfg.gradient_accumulation_steps * self.cfg.world_size

    def sample_advantages(self, rewards, weights):
        adv = A.combine({m: A.group_zscore(r) for m, r in rewards.items()}, weights, normalise=True)
        return A.clamp(adv, self.cfg.adv_clip_max)

    def cost(self, shared):
        G = shared.num_generations
        # the first round's window; it narrows near the end of the schedule
        return Cost(nfe_rollout=G * shared.num_steps, nfe_train=G * len(self.candidate_steps(shared.num_steps, 0)),
                    images_scored=G)
