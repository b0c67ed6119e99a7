"""What DanceGRPO, Flow-GRPO and MixGRPO share: whole SDE/ODE trajectories per sample.

Every sample of a group runs the full schedule; step j injects noise with coefficient g[j]
(0 = plain Euler). Each sample's trainable steps become rows of ``Transitions`` with n = 1.
Subclasses say: the step coefficients of a round, whether a group shares x_T, which steps are
candidates and which of them are trained, how rewards become advantages, and how samples are
grouped into optimizer steps.
"""
from __future__ import annotations

import torch

from g2rpo.config import SharedConfig
from g2rpo.method import Layout, Method, Rollout, Transitions
from g2rpo.policy import Cond, FlowPolicy
from g2rpo.sampling import _velocity
from g2rpo.sde import flow_sde_g, predict_x0, sde_step


@torch.no_grad()
def sample_trajectories(policy: FlowPolicy, x_T: torch.Tensor, sigmas: torch.Tensor, g: torch.Tensor, cond: Cond,
                        noise: torch.Tensor, max_batch: int = 0, latent_dtype: torch.dtype | None = None):
    """Run every row of ``x_T`` over ``sigmas`` with per-step coefficients ``g`` ((N,), or (N, B) per row) and noises
    ``noise`` (N, B, ...).
    ``latent_dtype`` (e.g. bf16) rounds each latent to it where it is fed to the next step (the model and the SDE
    step), as Flow-GRPO's pipeline casts latents back to the transformer's dtype; the returned latents stay fp32.

    Returns latents (N+1, B, ...), log-probs (N, B) (0 at deterministic steps) and x0_hat of the last step (B, ...).
    """
    xs, logps = [x_T.float()], []
    for j in range(len(sigmas) - 1):
        s = sigmas[j].expand(len(x_T))
        x = xs[-1] if latent_dtype is None else xs[-1].to(latent_dtype).float()
        v = _velocity(policy, x, s, cond, max_batch)
        out = sde_step(x, v, s, sigmas[j + 1], g[j], noise=noise[j] if bool((g[j] > 0).any()) else None)
        xs.append(out.sample)
        logps.append(out.log_prob)
    return torch.stack(xs), torch.stack(logps), predict_x0(x, v, sigmas[-2])


def window_g(sigmas: torch.Tensor, steps, a: float) -> torch.Tensor:
    """Flow-SDE coefficients (noise level ``a``) at ``steps`` and 0 (ODE) at every other step of ``sigmas``' N steps:
    ``steps`` (S,) gives (N,); (B, S), one window per row, gives (N, B)."""
    steps = torch.as_tensor(steps, dtype=torch.long)
    g = flow_sde_g(sigmas[:-1], float(sigmas[1]), a)
    on = torch.zeros(len(g), *steps.shape[:-1], dtype=torch.bool)
    on.index_fill_(0, steps, True) if steps.ndim == 1 else on.scatter_(0, steps.T, True)
    return torch.where(on, g.view(-1, *[1] * (steps.ndim - 1)), torch.zeros(()))


def check_positive_ints(cfg, *knobs: str) -> None:
    """ValueError unless each named knob of ``cfg`` is an integer >= 1 (counts of steps, samples, GPUs)."""
    for knob in knobs:
        v = getattr(cfg, knob)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{knob} must be an integer >= 1, got {v!r}")


def trajectory_layout(rollout: Rollout) -> tuple[int, int, int]:
    """(P, G, S): prompts, samples per prompt and stored steps per sample; rows are (prompt, sample, step)."""
    lay = rollout.layout
    return lay.prompts, lay.generations, lay.steps


class TrajectoryMethod(Method):
    """Base of the trajectory baselines; subclasses fill in the hooks below."""

    image_from_x0_hat: bool = False
    """True: the image is x0_hat at the last step (DanceGRPO); False: the final sample x_N."""

    def schedule(self, shared: SharedConfig) -> torch.Tensor:
        return shared.sigmas()

    def step_g(self, sigmas: torch.Tensor, round_idx: int) -> torch.Tensor:
        """(N,) diffusion coefficient of each step this round."""
        raise NotImplementedError

    def shared_noise(self) -> bool:
        return True

    def rollout_dtype(self) -> torch.dtype | None:
        """Dtype each rollout latent is rounded to before it is fed on (None = fp32 throughout)."""
        return None

    def candidate_steps(self, n_steps: int, round_idx: int) -> list[int]:
        """Steps whose transitions are stored (a superset of the trained ones)."""
        raise NotImplementedError

    def plan(self, sigmas: torch.Tensor, round_idx: int, noise, prompts: int, generations: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps, g): the (P*G, S) steps whose transitions each sample (prompt-major) stores, and the coefficients,
        (N,) or (N, P*G) per sample. Default: ``candidate_steps`` and ``step_g`` for every sample. ``noise`` is the
        rollout's (drawn from after the SDE noise), for methods that draw their steps per sample."""
        steps = torch.tensor(self.candidate_steps(len(sigmas) - 1, round_idx), dtype=torch.long)  # may be empty
        return steps.expand(prompts * generations, len(steps)), self.step_g(sigmas, round_idx)

    def select(self, n_samples: int, n_steps: int, gen: torch.Generator) -> torch.Tensor:
        """(n_samples, n_steps) bool over the candidate steps: which each sample trains. Default: all."""
        return torch.ones(n_samples, n_steps, dtype=torch.bool)

    def samples_per_step(self, n_samples: int) -> int:
        """Samples whose transitions are accumulated into one optimizer step (over all devices of the recipe)."""
        raise NotImplementedError

    def devices(self) -> int:
        """GPUs of the official recipe (its ``world_size`` knob, else 1). When they divide the round, its samples are
        dealt to them as the official run does (prompt-major blocks) and each optimizer step takes the same number
        of samples from every block, as per-GPU gradient accumulation averaged over GPUs does."""
        return getattr(self.cfg, "world_size", 1)

    def optimizer_steps(self, shared: SharedConfig) -> int:
        """Optimizer steps of a round with every sample trained."""
        n = shared.prompts_per_round * shared.num_generations
        return -(-n // min(self.samples_per_step(n), n))

    def sample_advantages(self, rewards: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
        """(P, G) per-reward (P, G) rewards -> (P, G) advantages."""
        raise NotImplementedError

    def rollout(self, policy, cond, init_noise, noise, shared, round_idx=0) -> Rollout:
        self.validate(shared)
        sigmas = self.schedule(shared)
        P, G, shape = init_noise.shape[0], init_noise.shape[1], init_noise.shape[2:]
        x_T = init_noise[:, :1].expand(P, G, *shape) if self.shared_noise() else init_noise
        x_T = x_T.reshape(P * G, *shape)
        n = len(sigmas) - 1
        z = noise((n, G, *shape), dim=1).reshape(n, P * G, *shape)
        st, g = self.plan(sigmas, round_idx, noise, P, G)  # st (P*G, S), S may be 0 (MixGRPO)
        rows_cond = cond[torch.arange(P).repeat_interleave(G).tolist()]
        xs, logp, x0 = sample_trajectories(policy, x_T, sigmas, g, rows_cond, z, shared.max_batch, self.rollout_dtype())
        S, b = st.shape[1], torch.arange(P * G)[:, None]  # rows (sample, step), step fastest
        tr = Transitions(
            prompt=torch.arange(P).repeat_interleave(G * S),
            k=st.reshape(-1),
            x=xs[st, b].reshape(P * G * S, *shape),
            sigma=sigmas[st].reshape(-1),
            sigma_next=sigmas[st + 1].reshape(-1),
            g=(g[st] if g.ndim == 1 else g[st, b]).reshape(-1),
            x_next=xs[st + 1, b].reshape(P * G * S, 1, *shape),
            log_prob_old=logp[st, b].reshape(P * G * S, 1),
        )
        final = x0 if self.image_from_x0_hat else xs[-1]
        return Rollout(images=policy.decode(final), image_prompt=torch.arange(P).repeat_interleave(G), transitions=tr,
                       layout=Layout(prompts=P, generations=G, steps=S), latents=xs.view(n + 1, P, G, *shape))

    def advantages(self, rollout, rewards, weights) -> dict:
        P, G, S = trajectory_layout(rollout)
        adv = self.sample_advantages({m: r.view(P, G) for m, r in rewards.items()}, weights)
        tr = rollout.transitions
        tr.adv = adv.reshape(P * G, 1).repeat_interleave(S, 0)
        return {"adv_abs_mean": adv.abs().mean().item()}

    def update_groups(self, rollout, gen) -> list[torch.Tensor]:
        """Select each sample's trained steps, shuffle the samples and split them into optimizer steps."""
        P, G, S = trajectory_layout(rollout)
        tr = rollout.transitions
        keep = self.select(P * G, S, gen).reshape(P * G * S, 1)
        tr.mask = keep if tr.mask is None else tr.mask & keep
        return [(s[:, None] * S + torch.arange(S)).reshape(-1)  # rows are (sample, step), step fastest
                for s in self.sample_steps(torch.arange(P * G), gen)]

    def sample_steps(self, samples: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        """Shuffle ``samples`` (prompt-major) and split them into optimizer steps of ``samples_per_step`` each; with
        W > 1 devices dividing them and the step, each device's block is shuffled and gives 1/W of every step."""
        n, W = len(samples), self.devices()
        size = self.samples_per_step(n)
        if W > 1 and n % W == 0 and size % W == 0:
            per = n // W
            blocks = torch.stack([samples[b * per + torch.randperm(per, generator=gen)] for b in range(W)])
            return [blocks[:, i : i + size // W].reshape(-1) for i in range(0, per, size // W)]
        return list(samples[torch.randperm(n, generator=gen)].split(size))
