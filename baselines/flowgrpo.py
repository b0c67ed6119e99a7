"""Flow-GRPO (algorithms.md §5): Flow-SDE on every step, global-std advantages, optional KL to the base model."""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

import torch

from g2rpo import advantages as A
from g2rpo.config import MethodConfig, OptimConfig, SharedConfig
from g2rpo.ema import EMAConfig
from g2rpo.loss import kl_to_reference
from g2rpo.method import Cost
from g2rpo.models.lora import reference_policy
from g2rpo.sde import flow_sde_g, sde_step
from g2rpo.tiers import architecture

from .trajectory import TrajectoryMethod, check_positive_ints, trajectory_layout

LORA_OPTIM = OptimConfig(lr=3e-4, weight_decay=1e-4, max_grad_norm=1.0)
"""Official AdamW settings; lr 3e-4 is a rate for its LoRA (r 32-64), not for every weight."""


class MultiReward(str, enum.Enum):
    """How several rewards combine."""

    SUM_REWARDS = "sum_rewards"
    """Official `multi_score`: advantages of the weighted sum of raw rewards."""
    SUM_ADVANTAGES = "sum_advantages"
    """Weighted sum of per-reward advantages (the G2RPO rule)."""


@dataclass
class FlowGRPOConfig(MethodConfig):
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
    num_rollout_steps: int | None = None
    """Denoising reduction: rollout steps (SD3.5 preset: 10) on the shared schedule's grid; None = the shared num_steps."""
    optimizer_steps_per_round: int = 2
    """Optimizer steps per round (official: gradient_accumulation_steps = num_batches_per_epoch // 2)."""
    num_batches_per_epoch: int = 2
    """Official `sample.num_batches_per_epoch`, batches per GPU and round: zero-advantage samples are re-admitted at
    random until each GPU's kept count divides by it."""
    world_size: int = 1
    """GPUs of the recipe (pickscore_sd3: 32): the zero-advantage filter and the optimizer steps act per GPU's block."""
    use_lora: bool = True
    """Train a LoRA (official `use_lora`): the shared `lora` if set, else 'flowgrpo-sd3' on SD3 and 'flowgrpo-flux'
    on FLUX-class models; False = every weight, which needs an explicit learning rate."""
    latent_dtype: str = "fp32"
    """'bf16' feeds each rollout latent to the next step rounded to bf16, as the official pipeline (latents in the
    transformer's dtype); stored latents and log-probs stay fp32, so the first ratio is off 1 by rounding. Default fp32."""
    optim: OptimConfig | None = None
    """AdamW settings; None = official (lr 3e-4, wd 1e-4, clip 1), refused for a full fine-tune (a LoRA rate)."""
    ema: EMAConfig | None = field(default_factory=EMAConfig)
    """Evaluate and save an EMA of the weights (official `train.ema`: decay 0.9, every 8 steps); None = live weights."""

    def __post_init__(self):
        self.multi_reward = MultiReward(self.multi_reward)



class OfficialLoRA:
    """The LoRA recipe of the Flow-GRPO codebase (Flow-GRPO; DiffusionNFT, built on it, has the same ranks, targets and
    AdamW): a config with ``use_lora`` and ``optim`` (None = the official LoRA rate ``LORA_OPTIM``). Mixed in before
    the ``Method`` base."""

    def __init__(self, cfg=None) -> None:
        cfg = cfg or self.config_class()
        self.lr_given = cfg.optim is not None
        super().__init__(cfg if self.lr_given else dataclasses.replace(cfg, optim=dataclasses.replace(LORA_OPTIM)))

    def lora(self, shared):
        if shared.lora or not self.cfg.use_lora:
            return shared.lora
        return "flowgrpo-sd3" if architecture(shared.model) == "sd3" else "flowgrpo-flux"

    def check_lora(self, shared: SharedConfig) -> None:
        if shared.lora and not self.cfg.use_lora:
            raise ValueError(f"use_lora=False contradicts the shared lora={shared.lora!r}")
        if not self.lora(shared) and not self.lr_given:
            raise ValueError(f"a full fine-tune (use_lora=False) at lr {LORA_OPTIM.lr:g}, the official LoRA rate; "
                             "set the learning rate explicitly (--lr, or optim in the preset's knobs)")


class FlowGRPO(OfficialLoRA, TrajectoryMethod):
    name = "flowgrpo"
    config_class = FlowGRPOConfig
    cfg: FlowGRPOConfig

    def validate(self, shared: SharedConfig) -> None:
        super().validate(shared)
        if not 0 < self.cfg.timestep_fraction <= 1:
            raise ValueError(f"timestep_fraction must be in (0, 1], got {self.cfg.timestep_fraction}")
        if self.cfg.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.cfg.beta}")
        if self.cfg.latent_dtype not in ("fp32", "bf16"):
            raise ValueError(f"latent_dtype must be 'fp32' or 'bf16', got {self.cfg.latent_dtype!r}")
        check_positive_ints(self.cfg, "num_batches_per_epoch", "world_size", "optimizer_steps_per_round")
        self.check_lora(shared)

    def setup(self, policy):
        if self.cfg.beta > 0:
            # the base model: with LoRA the same module with adapters disabled, else a frozen copy
            self.reference = reference_policy(policy)

    def schedule(self, shared):
        if self.cfg.num_rollout_steps is None:
            return shared.sigmas()
        return dataclasses.replace(shared, num_steps=self.cfg.num_rollout_steps).sigmas()

    def rollout_dtype(self):
        return torch.bfloat16 if self.cfg.latent_dtype == "bf16" else None

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
        tr.mask = tr.adv != 0  # official: samples whose advantage is zero are dropped (some re-admitted below)
        stats["dropped_frac"] = 1 - tr.mask.float().mean().item()
        return stats

    def update_groups(self, rollout, gen):
        """Per GPU block, as the official code: re-admit random zero-advantage samples until the kept count divides by
        num_batches_per_epoch, shuffle the kept ones and split them into optimizer_steps_per_round steps; step s
        takes every block's s-th part."""
        P, G, S = trajectory_layout(rollout)
        tr, n = rollout.transitions, P * G
        kept = torch.ones(n, dtype=torch.bool) if tr.mask is None else tr.mask.view(n, S).any(1)
        W = self.devices() if n % self.devices() == 0 else 1
        per, B, steps = n // W, self.cfg.num_batches_per_epoch, self.cfg.optimizer_steps_per_round
        parts = []
        for b in range(W):
            block = kept[b * per : (b + 1) * per]  # a view: re-admissions land in kept
            short, dropped = -int(block.sum()) % B, torch.nonzero(~block).squeeze(1)
            if short and len(dropped) >= short:
                block[dropped[torch.randperm(len(dropped), generator=gen)[:short]]] = True
            ids = b * per + torch.nonzero(block).squeeze(1)
            ids = ids[torch.randperm(len(ids), generator=gen)]
            parts.append(ids.split(-(-len(ids) // steps)) if len(ids) else ())
        tr.mask = kept.repeat_interleave(S)[:, None]
        groups = [torch.cat([p[i] for p in parts if i < len(p)]) for i in range(max(map(len, parts)))]
        return [(g[:, None] * S + torch.arange(S)).reshape(-1) for g in groups]

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
