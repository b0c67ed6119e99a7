"""G2RPO: Singular Stochastic Sampling + Multi-Granularity Advantage Integration (algorithms.md §3).

Per prompt: one shared x_T, one deterministic anchor trajectory x_0..x_N. For each k in
``eta_step_list`` and member i, one Flow-SDE step off the anchor latent x_k (the only noise of that
trajectory), then for each granularity lambda in ``granular_list`` a deterministic completion on
sigma[k+1] ⊕ sigma[k+2::lambda]. Advantages are group z-scores per (reward, lambda, k), summed.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from . import advantages as A
from .config import MethodConfig, SharedConfig
from .method import Cost, Layout, Method, Rollout, Transitions
from .policy import Cond, FlowPolicy, autocast
from .sampling import _velocity, complete_many, complete_one, evaluations, ode_sample
from .schedules import coarse_completion_grid
from .sde import flow_sde_g, sde_step


class CompletionEnd(str, enum.Enum):
    """Where a coarse MGAI completion ends when the stride lambda skips sigma = 0."""

    OFFICIAL = "official"
    """Official code: the grid stops at its last point > 0; the image is x0_hat at the second-to-last point."""
    ZERO = "zero"
    """Append sigma = 0 to the grid so the last evaluation is at the grid's last point > 0."""


class UpdateSchedule(str, enum.Enum):
    """How the |M| per-k losses of a round become optimizer steps."""

    PER_STEP = "per_step"
    """Official code: one optimizer step per k in eta_step_list, in order."""
    ACCUMULATE = "accumulate"
    """Paper's Algorithm 1: losses of all k averaged into one optimizer step."""


class RolloutMode(str, enum.Enum):
    """How the rollout is executed; both give the same samples for the same noise."""

    BATCHED = "batched"
    """Branch-parallel: members, granularities and k advance together; the anchor velocity is reused for the SDE step."""
    REFERENCE = "reference"
    """One sample at a time, as the official loop: per-member velocity at x_k and per-chain completions."""


@dataclass
class G2RPOConfig(MethodConfig):
    """Method knobs of G2RPO; defaults are the official training scripts' (``MethodConfig``'s are G2RPO's)."""

    eta: float = 0.7
    """a, the Flow-SDE noise level: g = a * sqrt(sigma / (1 - sigma~))."""
    eta_step_list: tuple[int, ...] = tuple(range(8))
    """M, the steps k where noise is injected (one per trajectory); default the first half of N = 16."""
    granular_list: tuple[int, ...] = (1, 2)
    """Lambda, completion granularities (official scripts {1, 2}; the paper's main runs {1, 2, 3}; {1} = w/o MGAI)."""
    completion_end: CompletionEnd = CompletionEnd.OFFICIAL
    """Endpoint rule of coarse completions (see CompletionEnd)."""
    update: UpdateSchedule = UpdateSchedule.PER_STEP
    """Optimizer steps per round (see UpdateSchedule)."""
    rollout_mode: RolloutMode = RolloutMode.BATCHED
    """Rollout execution (see RolloutMode)."""
    shared_prefix: bool = True
    """Batched rollout: a member's completions at every granularity share their first two evaluations (each grid
    starts sigma[k+1], sigma[k+2]), computed once; the same samples. False: every chain evaluated on its own."""
    completion_dtype: str = "model"
    """'bf16': the completions' forwards in bf16 autocast (they only make the scored images; x_next and its log-prob
    come from the anchor, so the ratio at the first update stays 1, but rewards move by bf16 rounding);
    'model' (default): the shared precision."""
    anchor_dtype: str = "fp32"
    """'bf16': stored anchor latents x_k rounded to bf16 as the official code stores them; 'fp32' (default): exact."""

    def __post_init__(self):
        self.eta_step_list = tuple(int(k) for k in self.eta_step_list)
        self.granular_list = tuple(int(g) for g in self.granular_list)
        self.completion_end = CompletionEnd(self.completion_end)
        self.update = UpdateSchedule(self.update)
        self.rollout_mode = RolloutMode(self.rollout_mode)
        if self.completion_dtype not in ("model", "bf16"):
            raise ValueError(f"completion_dtype must be 'model' or 'bf16', got {self.completion_dtype!r}")
        if self.anchor_dtype not in ("fp32", "bf16"):
            raise ValueError(f"anchor_dtype must be 'fp32' or 'bf16', got {self.anchor_dtype!r}")


class G2RPO(Method):
    name = "g2rpo"
    config_class = G2RPOConfig
    cfg: G2RPOConfig

    def _completion_autocast(self, policy: FlowPolicy):
        """bf16 autocast around the completions under completion_dtype 'bf16'; else none (the policy's own precision)."""
        return autocast("bf16" if self.cfg.completion_dtype == "bf16" else None, policy.device)

    def _grid(self, sigmas: torch.Tensor, k: int, lam: int) -> torch.Tensor:
        return coarse_completion_grid(sigmas, k, lam, self.cfg.completion_end is CompletionEnd.ZERO)

    @torch.no_grad()
    def _anchor(self, policy: FlowPolicy, x_T: torch.Tensor, sigmas: torch.Tensor, cond: Cond, max_batch: int = 0):
        """The anchor ODE (``ode_sample``, in fp32). Under anchor_dtype 'bf16' the stored latents x_0..x_N, which
        start the SDE steps and become the transitions' x, are rounded to bf16; the ODE and its image are unchanged."""
        x0, xs, vs = ode_sample(policy, x_T, sigmas, cond, max_batch)
        if self.cfg.anchor_dtype == "bf16":
            xs = xs.to(torch.bfloat16).float()
        return x0, xs, vs

    def validate(self, shared: SharedConfig) -> None:
        n, ks, lams = shared.num_steps, self.cfg.eta_step_list, self.cfg.granular_list
        if not ks or any(k < 0 or k > n - 2 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"eta_step_list {list(ks)} must be distinct steps in [0, N-2] = [0, {n - 2}]")
        if not lams or any(g < 1 for g in lams) or len(set(lams)) != len(lams):
            raise ValueError(f"granular_list {list(lams)} must be distinct integers >= 1")
        super().validate(shared)

    def rollout(self, policy: FlowPolicy, cond: Cond, init_noise: torch.Tensor, noise,
                shared: SharedConfig, round_idx: int = 0) -> Rollout:
        self.validate(shared)
        cfg, sigmas = self.cfg, shared.sigmas()
        ks, lams = cfg.eta_step_list, cfg.granular_list
        P, G, shape = init_noise.shape[0], init_noise.shape[1], init_noise.shape[2:]
        x_T = init_noise[:, 0]  # one shared initial noise per group
        z = noise((len(ks), G, *shape))  # (P, |M|, G, ...)
        g = flow_sde_g(sigmas, float(sigmas[1]), cfg.eta)

        if cfg.rollout_mode is RolloutMode.BATCHED:
            x0_ode, xs, vs = self._anchor(policy, x_T, sigmas, cond, shared.max_batch)
            if cfg.anchor_dtype == "bf16":  # the velocity at the rounded x_k, as the official loop evaluates it
                vs = {k: _velocity(policy, xs[k], sigmas[k].expand(P), cond, shared.max_batch) for k in ks}
            x_next, logp = [], []
            for j, k in enumerate(ks):
                rep = lambda t: t[:, None].expand(P, G, *shape).reshape(P * G, *shape)  # noqa: E731
                out = sde_step(rep(xs[k]), rep(vs[k]), sigmas[k], sigmas[k + 1], g[k], noise=z[:, j].reshape(P * G, *shape))
                x_next.append(out.sample.view(P, G, *shape))
                logp.append(out.log_prob.view(P, G))
            x_next, logp = torch.stack(x_next, 1), torch.stack(logp, 1)  # (P, |M|, G, ...)
            starts = x_next[:, :, None].expand(P, len(ks), len(lams), G, *shape).reshape(-1, *shape)
            grids = [self._grid(sigmas, k, lam) for _ in range(P) for k in ks for lam in lams for _ in range(G)]
            rows = torch.arange(P).repeat_interleave(len(ks) * len(lams) * G)
            member = torch.arange(P * len(ks) * G).view(P, len(ks), 1, G).expand(P, len(ks), len(lams), G).reshape(-1)
            with self._completion_autocast(policy):
                x0 = complete_many(policy, starts, grids, cond[rows.tolist()], shared.max_batch,
                                   member if cfg.shared_prefix else None)
            anchor = xs[: max(ks) + 1]
        else:
            x0_ode, x_next, logp, x0, anchor = self._rollout_reference(policy, cond, x_T, z, sigmas, g)

        n_img = P * len(ks) * len(lams) * G
        tr = Transitions(  # rows (prompt, k), prompt-major like every method's, so ranks hold contiguous blocks
            prompt=torch.arange(P).repeat_interleave(len(ks)),
            k=torch.tensor(ks).repeat(P),
            x=anchor[list(ks)].transpose(0, 1).reshape(P * len(ks), *shape),
            sigma=sigmas[list(ks)].repeat(P),
            sigma_next=sigmas[[k + 1 for k in ks]].repeat(P),
            g=g[list(ks)].repeat(P),
            x_next=x_next.reshape(P * len(ks), G, *shape),
            log_prob_old=logp.reshape(P * len(ks), G),
        )
        return Rollout(
            images=policy.decode(x0.reshape(n_img, *shape)),
            image_prompt=torch.arange(P).repeat_interleave(n_img // P),
            transitions=tr,
            layout=Layout(prompts=P, generations=G, steps=len(ks), granularities=len(lams)),
            extra_images={"ode": policy.decode(x0_ode)},
        )

    @torch.no_grad()
    def _rollout_reference(self, policy, cond, x_T, z, sigmas, g):
        ks, lams = self.cfg.eta_step_list, self.cfg.granular_list
        P, G = z.shape[0], z.shape[2]
        x0_ode, anchors, x_next, logp, x0 = [], [], [], [], []
        for p in range(P):
            c = cond[p]
            o, xs, _ = self._anchor(policy, x_T[p : p + 1], sigmas, c)
            x0_ode.append(o)
            anchors.append(xs[:, 0])
            for j, k in enumerate(ks):
                for i in range(G):
                    v = policy(xs[k], sigmas[k : k + 1], c)
                    out = sde_step(xs[k], v, sigmas[k], sigmas[k + 1], g[k], noise=z[p, j, i : i + 1])
                    x_next.append(out.sample[0])
                    logp.append(out.log_prob[0])
                    with self._completion_autocast(policy):
                        x0 += [complete_one(policy, out.sample, self._grid(sigmas, k, lam), c)[0] for lam in lams]
        shape = x_T.shape[1:]
        x_next = torch.stack(x_next).view(P, len(ks), G, *shape)
        logp = torch.stack(logp).view(P, len(ks), G)
        # reference order is (p, k, i, lambda); the batched layout is (p, k, lambda, i)
        x0 = torch.stack(x0).view(P, len(ks), G, len(lams), *shape).transpose(2, 3)
        anchor = torch.stack(anchors, 1)  # (N+1, P, ...)
        return torch.cat(x0_ode), x_next, logp, x0, anchor

    def advantages(self, rollout: Rollout, rewards: dict[str, torch.Tensor], weights: dict[str, float]) -> dict:
        lay = rollout.layout
        P, nk, nl, G = lay.prompts, lay.steps, lay.granularities, lay.generations
        per_reward = {m: A.group_zscore(r.view(P, nk, nl, G)).sum(2) for m, r in rewards.items()}
        adv = A.clamp(A.combine(per_reward, weights), self.cfg.adv_clip_max)  # (P, |M|, G)
        rollout.transitions.adv = adv.reshape(P * nk, G)
        return {"adv_abs_mean": adv.abs().mean().item(), "adv_clipped_frac": (adv.abs() >= self.cfg.adv_clip_max).float().mean().item()}

    def update_groups(self, rollout: Rollout, gen: torch.Generator) -> list[torch.Tensor]:
        tr = rollout.transitions
        if self.cfg.update is UpdateSchedule.ACCUMULATE:
            return [torch.arange(len(tr.k))]
        return [torch.nonzero(tr.k == k).squeeze(1) for k in self.cfg.eta_step_list]

    def optimizer_steps(self, shared: SharedConfig) -> int:
        return 1 if self.cfg.update is UpdateSchedule.ACCUMULATE else len(self.cfg.eta_step_list)

    def completion_evals(self, shared: SharedConfig, k: int, lam: int) -> int:
        """Model evaluations of one completion: ceil((N-1-k)/lambda), +1 under CompletionEnd.ZERO when lambda skips 0."""
        return len(self._grid(shared.sigmas(), k, lam)) - 1

    def member_completion_evals(self, shared: SharedConfig, k: int) -> int:
        """Model evaluations of one member's completions over every granularity: their sum, less the points they
        share under ``shared_prefix`` in the batched rollout (the distinct grid prefixes they evaluate at)."""
        grids = [self._grid(shared.sigmas(), k, lam) for lam in self.cfg.granular_list]
        shares = self.cfg.shared_prefix and self.cfg.rollout_mode is RolloutMode.BATCHED
        return evaluations(grids, torch.zeros(len(grids), dtype=torch.long) if shares else None)

    def cost(self, shared: SharedConfig) -> Cost:
        ks, lams, G = self.cfg.eta_step_list, self.cfg.granular_list, shared.num_generations
        completions = sum(self.member_completion_evals(shared, k) for k in ks)
        separate = sum(self.completion_evals(shared, k, lam) for k in ks for lam in lams)
        # the batched rollout reuses the anchor's velocity at x_k for the SDE step (once per k at the bf16-rounded
        # x_k under anchor_dtype 'bf16'); the official loop recomputes it per member
        if self.cfg.rollout_mode is RolloutMode.REFERENCE:
            sde = G * len(ks)
        else:
            sde = len(ks) if self.cfg.anchor_dtype == "bf16" else 0
        official = shared.num_steps + G * separate + G * len(ks)  # the paper's 1216 / 1792 / 2188 for Lambda 1..3
        return Cost(
            nfe_rollout=shared.num_steps + G * completions + sde,
            nfe_train=len(ks),
            images_scored=G * len(ks) * len(lams) + 1,
            nfe_rollout_official=official if sde != G * len(ks) else None,
        )
