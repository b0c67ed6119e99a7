"""DiffusionNFT (Zheng et al., arXiv 2509.16117): online RL on the forward process, no likelihoods.

Read from the official code (NVlabs/DiffusionNFT at 24af555: ``scripts/train_nft_sd3.py``, ``config/nft.py``,
``config/base.py``, ``flow_grpo/diffusers_patch/solver.py``):
  * rollout: the *old* policy (a slowly moving copy of the trained weights) samples every image with a deterministic
    solver (multistep DPM-Solver++(2M), ``dpm_sample``); only the clean latent x0 and the reward are kept;
  * training: each sample is noised afresh, x_t = (1 - t) x0 + t eps, at int(N * timestep_fraction) of the rollout's N
    timesteps (a random subset per sample); the policy's velocity v and the old one's v_old there make the implicit
    positive and negative policies beta v + (1 - beta) v_old and (1 + beta) v_old - beta v, and the loss pulls the
    positive one's x0 toward x0 with weight r and the negative one's with 1 - r (``nft_loss``), r the reward's
    optimality probability in [0, 1] (``optimality_prob``); plus ``train_beta`` times the squared velocity distance to
    the base model;
  * after each round the old policy moves toward the trained weights: old <- d old + (1 - d) theta, d from
    ``old_decay``;
  * the evaluated weights are an EMA (decay 0.9, every optimizer step).
On the shared loop: the rollout also draws each row's t and eps and evaluates v_old there (the old weights are fixed
within a round, so this is the official computation moved before the update); a row is (prompt, sample, timestep) with
x = x_t, sigma = t, x_next = x0 at sigma_next = 0, and the loss replaces PPO through ``Method.policy_loss``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from g2rpo import advantages as A
from g2rpo.config import MethodConfig, OptimConfig, SharedConfig
from g2rpo.ema import EMAConfig, swapped
from g2rpo.method import Cost, Layout, Method, Rollout, Transitions
from g2rpo.models.lora import reference_policy
from g2rpo.policy import Cond, FlowPolicy
from g2rpo.sampling import _velocity
from g2rpo.sde import euler_step, predict_x0

from .flowgrpo import OfficialLoRA
from .trajectory import check_positive_ints

ADV_MODES = ("all", "positive_only", "negative_only", "one_only", "binary")
DECAY_SCHEDULES = {0: (0, 0.0, 0.0), 1: (0, 0.001, 0.5), 2: (75, 0.0075, 0.999)}
"""decay_type -> (flat steps, rise per optimizer step, cap) of the old policy's decay (official ``return_decay``)."""


def old_decay(step: int, decay_type: int) -> float:
    """The old policy's decay after ``step`` optimizer steps: 0 for the first ``flat`` steps, then rising linearly by
    ``rate`` per step up to ``cap`` (``DECAY_SCHEDULES``)."""
    flat, rate, cap = DECAY_SCHEDULES[decay_type]
    return 0.0 if step < flat else min((step - flat) * rate, cap)


def dpm2_step(x: torch.Tensor, m0: torch.Tensor, m1: torch.Tensor, s1: float, s0: float, t: float) -> torch.Tensor:
    """Multistep DPM-Solver++(2M) for a flow (alpha = 1 - sigma): x at sigma s0 -> t from the x0-predictions ``m0`` at
    s0 and ``m1`` at the previous sigma s1. At s1 = 1 (lambda = -inf) the correction vanishes and it is the first-order
    update, which for a flow is exactly the Euler step."""
    lam = lambda s: torch.log(torch.tensor(1 - s, dtype=torch.float64)) - torch.log(torch.tensor(s, dtype=torch.float64))  # noqa: E731
    h = lam(t) - lam(s0)
    c = (1 - t) * (torch.exp(-h) - 1)
    d1 = torch.zeros_like(m0) if s1 >= 1 else (h / (lam(s0) - lam(s1))).float() * (m0 - m1)
    return (t / s0) * x - c.float() * (m0 + 0.5 * d1)


@torch.no_grad()
def dpm_sample(policy: FlowPolicy, x: torch.Tensor, sigmas: torch.Tensor, cond: Cond, max_batch: int = 0,
               order: int = 2) -> torch.Tensor:
    """The official deterministic ``dpm<order>`` solver over ``sigmas`` (sigma_N = 0): the first and the last step are
    Euler (DDIM, eta 0), the others ``dpm2_step`` (order 2) or Euler (order 1, which DPM-Solver++(1) is for a flow).
    One model evaluation per step; returns the final latent x_N (the clean sample)."""
    x, prev, N = x.float(), None, len(sigmas) - 1
    for i in range(N):
        s = sigmas[i]
        v = _velocity(policy, x, s.expand(len(x)), cond, max_batch)
        m = predict_x0(x, v, s)
        if order == 1 or i == 0 or i == N - 1:
            x = euler_step(x, v, s, sigmas[i + 1])
        else:
            x = dpm2_step(x, m, prev, float(sigmas[i - 1]), float(s), float(sigmas[i + 1]))
        prev = m
    return x


def optimality_prob(adv: torch.Tensor, adv_clip_max: float, adv_mode: str = "all") -> torch.Tensor:
    """r in [0, 1]: the advantage clamped to +-adv_clip_max (``adv_mode`` keeps only its positive or negative part, or
    maps it to {0, 1} or {-1, 1}), mapped linearly onto [0, 1] (official: clamp(A / adv_clip_max / 2 + 0.5, 0, 1))."""
    a = adv.clamp(-adv_clip_max, adv_clip_max)
    a = {"all": a, "positive_only": a.clamp(min=0), "negative_only": a.clamp(max=0),
         "one_only": (a > 0).to(a.dtype), "binary": a.sign()}[adv_mode]
    return (a / adv_clip_max / 2 + 0.5).clamp(0, 1)


def _adaptive_mse(x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared x0 error divided by its own (detached) mean absolute error, floored at 1e-5."""
    dims = tuple(range(1, x0.ndim))
    with torch.no_grad():
        w = (x0_hat.double() - x0.double()).abs().mean(dims, keepdim=True).clamp(min=1e-5)
    return ((x0_hat - x0) ** 2 / w).mean(dims)


def nft_loss(v: torch.Tensor, v_old: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor,
             r: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-sample DiffusionNFT policy loss (before the official x adv_clip_max): r * l(v+) / beta + (1 - r) * l(v-) /
    beta, v+ = beta v + (1 - beta) v_old, v- = (1 + beta) v_old - beta v, l(u) the adaptively weighted x0 error of
    x_t - t u. ``t`` (B,), ``r`` (B,)."""
    t = t.view(-1, *[1] * (x_t.ndim - 1))
    v_old = v_old.detach()
    pos = _adaptive_mse(x_t - t * (beta * v + (1 - beta) * v_old), x0)
    neg = _adaptive_mse(x_t - t * ((1 + beta) * v_old - beta * v), x0)
    return (r * pos + (1 - r) * neg) / beta


@dataclass
class DiffusionNFTConfig(MethodConfig):
    """DiffusionNFT's knobs; defaults are the official SD3.5 PickScore/HPSv2 recipe (``config/nft.py``)."""

    beta: float = 1.0
    """Official top-level `config.beta`: strength of the implicit positive/negative policies (OCR recipe: 0.1)."""
    train_beta: float = 1e-4
    """Official `train.beta`: weight of the squared velocity distance to the base model (0 = no reference calls)."""
    decay_type: int = 1
    """Old-policy decay schedule (`decay_type`, ``DECAY_SCHEDULES``): 0 on-policy, 1 min(0.001 s, 0.5), 2 the OCR one."""
    timestep_fraction: float = 0.99
    """Each sample trains at int(timestep_fraction * N) of the rollout's N timesteps, a random subset per sample."""
    adv_mode: str = "all"
    """How the clamped advantage enters r (`train.adv_mode`): one of ``ADV_MODES``."""
    per_prompt_stat_tracking: bool = True
    """Advantages centred per prompt (official); False = on the round's mean."""
    global_std: bool = True
    """Divide by the std of every reward of the round (+1e-4, official `sample.global_std`); False = per prompt."""
    solver: str = "dpm2"
    """Rollout sampler (`sample.solver`, deterministic): 'dpm2' (DPM-Solver++(2M)) or 'dpm1' (= the Euler ODE)."""
    gradient_step_per_epoch: int = 1
    """Optimizer steps per round, every sample's rows accumulated (official 1; OCR recipe 2)."""
    use_lora: bool = True
    """Train a LoRA (official `use_lora`; the Flow-GRPO codebase's ranks and targets), as Flow-GRPO."""
    optim: OptimConfig | None = None
    """AdamW settings; None = official (lr 3e-4, wd 1e-4, clip 1), refused for a full fine-tune (a LoRA rate)."""
    ema: EMAConfig | None = field(default_factory=lambda: EMAConfig(decay=0.9, update_step_interval=1))
    """Evaluate an EMA of the weights (official `train.ema`: decay 0.9, every optimizer step); None = live weights."""


class DiffusionNFT(OfficialLoRA, Method):
    name = "diffusionnft"
    config_class = DiffusionNFTConfig
    cfg: DiffusionNFTConfig
    params: dict[str, torch.nn.Parameter] | None = None
    old: dict[str, torch.Tensor] | None = None
    """The old policy's trained weights; None until ``attach`` (until then the policy itself, as at a run's start)."""

    def validate(self, shared: SharedConfig) -> None:
        super().validate(shared)
        c = self.cfg
        if not c.beta > 0 or c.train_beta < 0:
            raise ValueError(f"beta must be > 0 and train_beta >= 0, got {c.beta} and {c.train_beta}")
        if c.decay_type not in DECAY_SCHEDULES or c.adv_mode not in ADV_MODES or c.solver not in ("dpm1", "dpm2"):
            raise ValueError(f"decay_type must be one of {sorted(DECAY_SCHEDULES)}, adv_mode one of {ADV_MODES}, solver "
                             f"'dpm1' or 'dpm2'; got {c.decay_type!r}, {c.adv_mode!r}, {c.solver!r}")
        if not 0 < c.timestep_fraction <= 1 or self.train_steps(shared.num_steps) < 1:
            raise ValueError(f"timestep_fraction must be in (0, 1] and leave a trained timestep, got {c.timestep_fraction}")
        check_positive_ints(c, "gradient_step_per_epoch")
        self.check_lora(shared)

    def train_steps(self, n_steps: int) -> int:
        return int(self.cfg.timestep_fraction * n_steps)

    def setup(self, policy):
        if self.cfg.train_beta > 0:
            self.reference = reference_policy(policy)

    def attach(self, params):
        self.params, self.old = params, {n: p.detach().clone() for n, p in params.items()}

    def old_policy(self):
        """Context in which the policy holds the old weights."""
        return swapped(self.params, self.old) if self.old is not None else contextlib.nullcontext()

    @torch.no_grad()
    def end_round(self, optimizer_steps):
        if self.old is None:
            return
        d = old_decay(optimizer_steps, self.cfg.decay_type)
        for n, p in self.params.items():
            self.old[n].mul_(d).add_(p.detach(), alpha=1 - d)

    def state_dict(self):
        return {"old": dict(self.old)} if self.old is not None else {}

    def load_state_dict(self, state):
        with torch.no_grad():
            for n, w in self.old.items():
                w.copy_(state["old"][n])

    def rollout(self, policy, cond, init_noise, noise, shared, round_idx=0) -> Rollout:
        sigmas = shared.sigmas()
        P, G, shape = init_noise.shape[0], init_noise.shape[1], init_noise.shape[2:]
        N, T = len(sigmas) - 1, self.train_steps(shared.num_steps)
        # each row's timestep (a random T of the N per sample) and noise, per prompt: any world size draws the same
        ks = noise((G, N), dim=0).reshape(P * G, N).argsort(1)[:, :T]
        eps = noise((G * T, *shape), dim=0).reshape(P * G * T, *shape)
        t = sigmas[ks].reshape(-1)
        with self.old_policy():
            x0 = dpm_sample(policy, init_noise.reshape(P * G, *shape), sigmas,
                            cond[torch.arange(P).repeat_interleave(G).tolist()], shared.max_batch,
                            order=int(self.cfg.solver[-1]))
            x0_rows = x0.repeat_interleave(T, 0)
            x_t = (1 - t.view(-1, 1, 1, 1)) * x0_rows + t.view(-1, 1, 1, 1) * eps
            prompt = torch.arange(P).repeat_interleave(G * T)
            v_old = _velocity(policy, x_t, t, cond[prompt.tolist()], shared.max_batch)
        R = P * G * T
        tr = Transitions(prompt=prompt, k=ks.reshape(-1), x=x_t, sigma=t, sigma_next=torch.zeros(R), g=torch.zeros(R),
                         x_next=x0_rows.unsqueeze(1), log_prob_old=torch.zeros(R, 1), extra={"v_old": v_old})
        return Rollout(images=policy.decode(x0), image_prompt=torch.arange(P).repeat_interleave(G), transitions=tr,
                       layout=Layout(prompts=P, generations=G, steps=T))

    def advantages(self, rollout, rewards, weights) -> dict:
        lay = rollout.layout
        P, G, T = lay.prompts, lay.generations, lay.steps
        total = sum(weights[m] * v.view(P, G) for m, v in rewards.items())  # official `multi_score` 'avg'
        if not self.cfg.per_prompt_stat_tracking:
            total = total.reshape(1, P * G)  # one group: the round's mean, population std
        adv = (A.global_std_advantage(total) if self.cfg.global_std else A.per_group_std_advantage(total)).reshape(P * G, 1)
        tr = rollout.transitions
        tr.adv = adv.repeat_interleave(T, 0)
        # an image without a finite reward is not trained: r = 1/2 would still pull both implicit policies to it
        tr.mask = torch.isfinite(total).reshape(P * G, 1).repeat_interleave(T, 0)
        r = optimality_prob(adv, self.cfg.adv_clip_max, self.cfg.adv_mode)
        return {"adv_abs_mean": adv.abs().mean().item(), "optimality_mean": r.mean().item()}

    def update_groups(self, rollout, gen) -> list[torch.Tensor]:
        """Samples shuffled and split into ``gradient_step_per_epoch`` steps, each with all its rows."""
        lay = rollout.layout
        n, T = lay.prompts * lay.generations, lay.steps
        steps = torch.randperm(n, generator=gen).split(-(-n // self.cfg.gradient_step_per_epoch))
        return [(s[:, None] * T + torch.arange(T)).reshape(-1) for s in steps]

    def policy_loss(self, tr, rows, v):
        r = optimality_prob(tr.adv[rows, 0], self.cfg.adv_clip_max, self.cfg.adv_mode)
        per = nft_loss(v, tr.extra["v_old"][rows], tr.x[rows], tr.sigma[rows], tr.x_next[rows, 0], r, self.cfg.beta)
        return (per * self.cfg.adv_clip_max)[:, None], torch.ones(len(rows), 1)

    def extra_loss(self, policy, tr, rows, v, cond):
        if self.reference is None:
            return super().extra_loss(policy, tr, rows, v, cond)
        with torch.no_grad():
            v_ref = self.reference(tr.x[rows], tr.sigma[rows], cond)
        return self.cfg.train_beta * ((v - v_ref) ** 2).mean(tuple(range(1, v.ndim)))[:, None]

    def cost(self, shared):
        G, N = shared.num_generations, shared.num_steps
        T = G * self.train_steps(N)
        return Cost(nfe_rollout=G * N + T, nfe_train=T, images_scored=G, nfe_reference=T if self.cfg.train_beta > 0 else 0)

    def optimizer_steps(self, shared):
        return min(self.cfg.gradient_step_per_epoch, shared.prompts_per_round * shared.num_generations)
