"""Flow-GRPO (algorithms.md §5): Flow-SDE on every step, global-std advantages, optional KL to the base model."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from g2rpo import advantages as A
from g2rpo.config import OptimConfig, SharedConfig
from g2rpo.ema import EMAConfig
from g2rpo.loss import kl_to_reference
from g2rpo.method import Cost
from g2rpo.models.lora import reference_policy
from g2rpo.schedules import shifted_sigmas
from g2rpo.sde import flow_sde_g, sde_step

from .trajectory import TrajectoryMethod


class MultiReward(str, enum.Enum):
    """How several rewards combine."""

    SUM_REWARDS = "sum_rewards"
    """Official `multi_score`: advantages of the weighted sum of raw rewards."""
    SUM_ADVANTAGES = "sum_advantages"
    """Weighted sum of per-reward advantages (the G2RPO rule)."""


@dataclass
class FlowGRPOConfig:
    """Method knobs of Flow-GRPO; defaults are its official code's."""

    noise_level: float = 0.7
    """a, the Flow-SDE noise level (official `sample.noise_level`)."""
    timestep_fraction: float = 0.99
    """Trains the first int(timestep_fraction * N) transitions, in order."""
    global_std: bool = True
    """Normalise by the population std of every reward of the round (+1e-4); False = per-prompt std."""
    multi_reward: MultiReward = MultiReward.SUM_REWARDS
    """Combination of several rewards (see MultiReward)."""
    init_same_noise: bool = False
    """Independent x_T per sample (official); True shares x_T within a group."""
    beta: float = 0.0
    """KL weight to the frozen base policy (0 under FLUX-style shared settings; 0.04 in the SD3.5 GenEval/OCR preset)."""
    clip_range: float = 1e-4
    """PPO ratio clip epsilon."""
    adv_clip_max: float = 5.0
    """Advantages are clamped to +-adv_clip_max."""
    num_rollout_steps: int | None = None
    """Denoising reduction: rollout steps (SD3.5 preset: 10) on a fixed-shift grid; None = the shared num_steps."""
    optimizer_steps_per_round: int = 2
    """Optimizer steps per round (official: gradient_accumulation_steps = num_batches_per_epoch // 2)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, weight_decay=1e-4, max_grad_norm=1.0))
    """AdamW settings (official lr 3e-4 is for LoRA r 32 / alpha 64)."""
    ema: EMAConfig | None = field(default_factory=EMAConfig)
    """Evaluate and save an EMA of the weights (official `train.ema`: decay 0.9, every 8 steps); None = live weights."""

    def __post_init__(self):
        self.multi_reward = MultiReward(self.multi_reward)



class FlowGRPO(TrajectoryMethod):
    name = "flowgrpo"

    def __init__(self, cfg: FlowGRPOConfig | None = None) -> None:
        self.cfg = cfg or FlowGRPOConfig()
        self.optim = self.cfg.optim

    def validate(self, shared: SharedConfig) -> None:
        super().validate(shared)
        if not 0 < self.cfg.timestep_fraction <= 1:
            raise ValueError(f"timestep_fraction must be in (0, 1], got {self.cfg.timestep_fraction}")
        if self.cfg.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.cfg.beta}")

    def setup(self, policy):
        if self.cfg.beta > 0:
            # the base model: with LoRA the same module with adapters disabled, else a frozen copy
            self.reference = reference_policy(policy)

    def schedule(self, shared):
        if self.cfg.num_rollout_steps is None:
            return shared.sigmas()
        return shifted_sigmas(self.cfg.num_rollout_steps, shared.shift)

    def step_g(self, sigmas, round_idx):
        return flow_sde_g(sigmas[:-1], float(sigmas[1]), self.cfg.noise_level)

    def shared_noise(self):
        return self.cfg.init_same_noise

    def candidate_steps(self, n_steps, round_idx):
        return list(range(int(self.cfg.timestep_fraction * n_steps)))

    def samples_per_step(self, n_samples):
        return -(-n_samples // self.cfg.optimizer_steps_per_round)

    def _adv(self, r):
        return A.global_std_advantage(r) if self.cfg.global_std else A.per_group_std_advantage(r)

    def sample_advantages(self, rewards, weights):
        if self.cfg.multi_reward is MultiReward.SUM_REWARDS:
            adv = self._adv(sum(weights[m] * r for m, r in rewards.items()))
        else:
            adv = A.combine({m: self._adv(r) for m, r in rewards.items()}, weights)
        return A.clamp(adv, self.cfg.adv_clip_max)

    def advantages(self, rollout, rewards, weights):
        stats = super().advantages(rollout, rewards, weights)
        tr = rollout.transitions
        tr.mask = tr.adv != 0  # official: samples whose advantage is zero are dropped
        stats["dropped_frac"] = 1 - tr.mask.float().mean().item()
        return stats

    def extra_loss(self, policy, tr, rows, v, cond):
        if self.reference is None:
            return super().extra_loss(policy, tr, rows, v, cond)
        with torch.no_grad():
            v_ref = self.reference(tr.x[rows], tr.sigma[rows], cond)
        mean = sde_step(tr.x[rows], v, tr.sigma[rows], tr.sigma_next[rows], tr.g[rows]).mean
        mean_ref = sde_step(tr.x[rows], v_ref, tr.sigma[rows], tr.sigma_next[rows], tr.g[rows]).mean
        return self.cfg.beta * kl_to_reference(mean, mean_ref, tr.g[rows])[:, None]

    def cost(self, shared):
        G = shared.num_generations
        n = self.cfg.num_rollout_steps or shared.num_steps
        trained = G * int(self.cfg.timestep_fraction * n)
        return Cost(nfe_rollout=G * n, nfe_train=trained, images_scored=G,
                    nfe_reference=trained if self.cfg.beta > 0 else 0)
