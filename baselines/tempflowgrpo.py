"""TempFlow-GRPO (He et al., arXiv 2508.04324): trajectory branching + noise-aware weighting of each step's loss.

No official code is released (Shredded-Pork/TempFlow-GRPO holds only the README and the paper), so this follows the
paper and the authors' answer in that repository's issue #3:
  * seed groups: N initial noises per prompt (``num_seeds``), each with one deterministic (ODE) anchor trajectory;
  * trajectory branching: at every branching step k the anchor latent x_k takes K = G / N Flow-SDE steps (the only
    noise of a branch), each completed by the ODE to an image; "each timestep has its own advantage";
  * noise-aware weighting (paper Eq. 8): the clipped policy term at step k is scaled by Norm(sigma_t sqrt(dt)), the
    Flow-SDE transition std at k (sigma_t = a sqrt(t / (1 - t)), paper Eq. 5: our ``g``), normalised to mean 1 over
    the branching steps (``noise_aware_weights``), through ``Method.loss_weight``.
The branching and ODE completions are G2RPO's Singular Stochastic Sampling with the single granularity 1
(``g2rpo.granular``), run with each (prompt, seed) as one of its groups; nothing is duplicated here.

Guesses (no code to check against), each a config value: the advantage group (``adv_group``), the seed count when
G is not a multiple of 4, the optimizer steps per round, the mean-1 normalisation, no KL, G2RPO's optimizer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from g2rpo import advantages as A
from g2rpo.config import MethodConfig, SharedConfig
from g2rpo.granular import G2RPO, G2RPOConfig
from g2rpo.method import Cost, Layout, Method, Rollout, Transitions

from .trajectory import check_positive_ints


def noise_aware_weights(std: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 8's Norm(sigma_t sqrt(dt)): the per-step transition stds ``std`` (S,) divided by their mean, so the
    weights average 1 over the steps (the normalisation is a guess: the paper writes Norm(.) without defining it)."""
    std = std.double()
    return (std / std.mean()).float()


def transition_std(tr: Transitions, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """sigma_t sqrt(dt) of the rows' SDE steps: g * sqrt(sigma - sigma_next), the std ``sde_step`` samples with."""
    return tr.g[rows] * torch.sqrt(tr.sigma[rows] - tr.sigma_next[rows])


@dataclass
class TempFlowGRPOConfig(MethodConfig):
    """TempFlow-GRPO's knobs; settings the paper (built on Flow-GRPO's code) names keep Flow-GRPO's flag names."""

    noise_level: float = 0.7
    """a, the Flow-SDE noise level of the branching step (paper Eq. 5; Flow-GRPO's `sample.noise_level`)."""
    num_seeds: int = 0
    """N, initial noises per prompt (the seed group); K = G / N branches each (authors, issue #3: N = 4, K = 6 for
    G = 24). 0 = 4 where G is a multiple of 4 with K >= 2, else the largest N < 4 that divides G with K >= 2 (guess)."""
    branch_steps: tuple[int, ...] | None = None
    """Steps k the anchor branches at; None = every step 0..N_steps-2 (authors, issue #3: steps 0..8 of 10)."""
    adv_group: str = "seed"
    """Group the rewards are z-scored over, per branching step: 'seed' (the K branches of one seed and step, which is
    how we read the paper's seed groups "controlling for initialization") or 'prompt' (all N*K of the prompt) (guess)."""
    weighting: str = "noise"
    """'noise': the noise-aware weight (paper Eq. 8); 'none': every step weight 1 (the paper's ablation)."""
    optimizer_steps_per_round: int = 2
    """Optimizer steps per round, rows shuffled and split evenly (guess: Flow-GRPO's official 2, whose code the
    paper builds on)."""

    def __post_init__(self):
        if self.branch_steps is not None:
            self.branch_steps = tuple(int(k) for k in self.branch_steps)


class TempFlowGRPO(Method):
    name = "tempflowgrpo"
    config_class = TempFlowGRPOConfig
    cfg: TempFlowGRPOConfig

    def seeds(self, G: int) -> int:
        """N, initial noises per prompt under ``num_generations`` G."""
        if self.cfg.num_seeds:
            return self.cfg.num_seeds
        return next(n for n in (4, 3, 2, 1) if G % n == 0 and (G // n >= 2 or n == 1))

    def steps(self, shared: SharedConfig) -> tuple[int, ...]:
        b = self.cfg.branch_steps
        return tuple(range(shared.num_steps - 1)) if b is None else b

    def branching(self, shared: SharedConfig) -> tuple[G2RPO, SharedConfig]:
        """G2RPO's Singular Stochastic Sampling with granularity 1 on groups of K (one group per (prompt, seed))."""
        K = shared.num_generations // self.seeds(shared.num_generations)
        g2 = G2RPO(G2RPOConfig(eta=self.cfg.noise_level, eta_step_list=self.steps(shared), granular_list=(1,),
                               clip_range=self.cfg.clip_range, adv_clip_max=self.cfg.adv_clip_max))
        return g2, dataclasses.replace(shared, num_generations=K)

    def validate(self, shared):
        super().validate(shared)
        cfg, G = self.cfg, shared.num_generations
        N = cfg.num_seeds
        if not isinstance(N, int) or isinstance(N, bool) or N < 0 or (N and (G % N or G // N < 2)):
            raise ValueError(f"num_seeds {N!r} must divide num_generations G={G} into groups of K >= 2 (0 = auto)")
        if cfg.adv_group not in ("seed", "prompt"):
            raise ValueError(f"adv_group must be 'seed' or 'prompt', got {cfg.adv_group!r}")
        if cfg.weighting not in ("noise", "none"):
            raise ValueError(f"weighting must be 'noise' or 'none', got {cfg.weighting!r}")
        check_positive_ints(cfg, "optimizer_steps_per_round")
        g2, sub = self.branching(shared)
        g2.validate(sub)  # branch_steps distinct in [0, N-2], K >= 2, the noise level

    def rollout(self, policy, cond, init_noise, noise, shared, round_idx=0) -> Rollout:
        P, G, shape = init_noise.shape[0], init_noise.shape[1], init_noise.shape[2:]
        N = self.seeds(G)
        K, M = G // N, len(self.steps(shared))
        g2, sub = self.branching(shared)
        # seed s of prompt p starts at x_T = init_noise[p, s*K]; its branches' noise is the prompt's stream, one
        # (N, |M|, K) block per prompt, so any world size draws the same
        seed_noise = lambda shp, dim=0: noise((N, *shp), dim).reshape(-1, *shp)  # noqa: E731
        ro = g2.rollout(policy, cond[torch.arange(P).repeat_interleave(N).tolist()],
                        init_noise.reshape(P * N, K, *shape), seed_noise, sub, round_idx)
        tr = ro.transitions  # rows (prompt, seed, k), images (prompt, seed, k, branch): prompt-major
        tr.prompt = tr.prompt // N
        return Rollout(images=ro.images, image_prompt=ro.image_prompt // N, transitions=tr,
                       layout=Layout(prompts=P, generations=G, steps=N * M),
                       extra_images={"ode": ro.extra_images["ode"][::N]})  # seed 0's anchor ODE image, for logging

    def advantages(self, rollout, rewards, weights) -> dict:
        lay = rollout.layout
        P, G = lay.prompts, lay.generations
        N = self.seeds(G)
        K, M = G // N, lay.steps // N

        def z(r):  # (P, N, M, K)
            if self.cfg.adv_group == "seed":
                return A.group_zscore(r)
            per_step = r.permute(0, 2, 1, 3).reshape(P, M, N * K)
            return A.group_zscore(per_step).view(P, M, N, K).permute(0, 2, 1, 3)

        adv = A.clamp(A.combine({m: z(r.view(P, N, M, K)) for m, r in rewards.items()}, weights), self.cfg.adv_clip_max)
        rollout.transitions.adv = adv.reshape(P * N * M, K)
        return {"adv_abs_mean": adv.abs().mean().item(),
                "adv_clipped_frac": (adv.abs() >= self.cfg.adv_clip_max).float().mean().item()}

    def update_groups(self, rollout, gen) -> list[torch.Tensor]:
        """Every row trained; rows shuffled with the round's training stream and split into the round's steps."""
        n = len(rollout.transitions.prompt)
        return list(torch.randperm(n, generator=gen).tensor_split(min(self.cfg.optimizer_steps_per_round, n)))

    def optimizer_steps(self, shared):
        rows = shared.prompts_per_round * self.seeds(shared.num_generations) * len(self.steps(shared))
        return min(self.cfg.optimizer_steps_per_round, rows)

    def loss_weight(self, tr, rows):
        """Norm(sigma_t sqrt(dt)) of each row's step k, normalised over the branching steps the transitions hold
        (every process holds all of them: each prompt branches at every k)."""
        if self.cfg.weighting == "none":
            return None
        ks = torch.unique(tr.k)  # sorted
        idx = torch.stack([torch.nonzero(tr.k == k)[0, 0] for k in ks])  # a row of each step
        w = noise_aware_weights(transition_std(tr, idx))
        return w[torch.searchsorted(ks, tr.k[rows])][:, None]

    def cost(self, shared):
        N = self.seeds(shared.num_generations)
        g2, sub = self.branching(shared)
        c = g2.cost(sub)  # per (prompt, seed): its anchor ODE, K completions per step, one forward per (seed, k)
        return Cost(nfe_rollout=N * c.nfe_rollout, nfe_train=N * c.nfe_train,
                    images_scored=N * (c.images_scored - 1) + 1)  # one logged anchor image per prompt
