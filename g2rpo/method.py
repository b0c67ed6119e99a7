"""The method contract: what a method provides to the shared loop (``g2rpo.loop``), and the data between them.

A method is a ``Method`` subclass; the loop does everything else (prompts, rewards, the PPO update, logging,
checkpoints, data parallelism) the same way for every method, which is what makes the comparison fair.

Must provide:
  ``rollout``          where noise goes: a round's ``Rollout`` (images, trainable ``Transitions``, their ``Layout``).
  ``advantages``       rewards -> ``transitions.adv`` (and ``mask``).
  ``update_groups``    which transitions are trained, and the rows of each optimizer step.
  ``cost``             model evaluations and reward calls per prompt and round, from the config alone.
  ``optimizer_steps``  optimizer steps of a round with every sample trained.
May override: ``setup``, ``attach``, ``end_round``, ``validate``, ``lora``, ``policy_loss``, ``extra_loss``,
``loss_weight``, ``state_dict``/``load_state_dict`` (defaults: nothing, nothing, nothing, the shared checks, the shared
LoRA, the clipped PPO term on the Gaussian step's likelihood, no extra loss, weight 1, no state of its own).

Its config inherits ``g2rpo.config.MethodConfig`` (clip_range, adv_clip_max, optim, ema), overriding only defaults
its official code sets differently; ``Method(cfg)`` keeps it (default ``config_class()``), and its ``asdict`` is the
knobs every run records, so field names stay the official flags'.

Rows and images are prompt-major (``Layout``) and ``rollout`` takes its noise only from ``init_noise`` and
``noise``, so a process holding a slice of the round's prompts holds one contiguous block of rows and draws the noise
one process would draw for them. ``advantages`` and ``update_groups`` run on the distributed global view
(``DataParallel.global_view``): the whole round's layout, rewards, ``image_prompt`` and the rows' ``prompt``, ``k``,
``log_prob_old`` and ``mask``, but no latents or images; they must read nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import MethodConfig, OptimConfig, SharedConfig
from .ema import EMAConfig
from .loss import ppo_clip_loss
from .policy import Cond, FlowPolicy
from .sde import sde_step


@dataclass
class Transitions:
    """Trainable transitions sigma -> sigma_next, grouped by their start latent.

    Row r is one model forward at (x[r], sigma[r]); it scores n sampled next latents. G2RPO's
    members share their start latent (n = G), so the velocity is computed once per (prompt, k).
    Trajectory methods have n = 1.
    """

    prompt: torch.Tensor
    """(R,) index of the prompt in the round."""
    k: torch.Tensor
    """(R,) index of the step in the rollout schedule."""
    x: torch.Tensor
    """(R, C, H, W) start latent."""
    sigma: torch.Tensor
    """(R,) exact sigma of the start latent."""
    sigma_next: torch.Tensor
    """(R,) sigma after the step."""
    g: torch.Tensor
    """(R,) diffusion coefficient used at rollout."""
    x_next: torch.Tensor
    """(R, n, C, H, W) sampled next latents."""
    log_prob_old: torch.Tensor
    """(R, n) log-prob of x_next under the rollout policy."""
    adv: torch.Tensor | None = None
    """(R, n) advantages, filled by the method."""
    mask: torch.Tensor | None = None
    """(R, n) bool, which (row, member) pairs are trained; None = all."""
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-row tensors (R, ...) a method's ``policy_loss`` reads besides the fields above (DiffusionNFT's old-policy
    velocity); this process's rows only, never in the distributed global view."""

    @property
    def n(self) -> int:
        return self.x_next.shape[1]

    def trained(self) -> torch.Tensor:
        return torch.ones(self.log_prob_old.shape, dtype=torch.bool) if self.mask is None else self.mask


@dataclass(frozen=True)
class Layout:
    """The order of a round's rows and images. Both are prompt-major (all of prompt p before prompt p + 1), so the
    rows of a process's slice of the prompts are one contiguous block of the round's (``g2rpo.distributed``).

    Trajectory methods: row (p, i, s) is step s of sample i (n = 1); image (p, i).
    G2RPO: row (p, s) is the s-th noised step, its n = G members the group; image (p, s, lambda, i).
    """

    prompts: int
    """P, prompts of the rollout (this process's slice; the whole round in the distributed global view)."""
    generations: int
    """G, samples per prompt (the group)."""
    steps: int
    """Stored steps per sample (trajectory methods' candidate steps S) or per group (G2RPO's |M|)."""
    granularities: int = 1
    """Images per (step, member): G2RPO's |Lambda| completions; 1 elsewhere."""


@dataclass
class Rollout:
    """Everything a method's rollout produced for one round."""

    images: torch.Tensor
    """(I, 3, H, W) images in [0, 1] whose rewards make the advantages."""
    image_prompt: torch.Tensor
    """(I,) prompt index of each image."""
    transitions: Transitions
    layout: Layout
    """Order of ``transitions``' rows and of ``images``, which the advantage step reads."""
    extra_images: dict[str, torch.Tensor] = field(default_factory=dict)
    """Images only scored for logging, e.g. G2RPO's anchor ODE image as 'ode'; each (P, 3, H, W)."""
    latents: torch.Tensor | None = None
    """(N+1, P, G, C, H, W) every latent of the trajectory methods' samples (tests read them); None elsewhere."""


@dataclass
class Cost:
    """Model evaluations and reward calls per prompt and round, counted from the config alone."""

    nfe_rollout: int
    """Per-sample model evaluations without grad (rollout, anchor, completions)."""
    nfe_train: int
    """Per-sample model forward+backward evaluations in the update."""
    images_scored: int
    """Images scored by each reward model (including logging-only images)."""
    nfe_reference: int = 0
    """Forward-only evaluations of a frozen reference policy in the update (Flow-GRPO's KL)."""
    nfe_rollout_official: int | None = None
    """``nfe_rollout`` as the official loop (and the paper) counts it, where ours is lower; None = the same."""


class Method:
    """Base class of a method on the shared loop."""

    name: str = "method"
    config_class: type[MethodConfig] = MethodConfig
    """The method's knobs; ``Method()`` takes their defaults, the official ones."""
    reference: FlowPolicy | None = None
    """A frozen reference policy the update evaluates (Flow-GRPO's KL); its calls are counted apart."""

    def __init__(self, cfg: MethodConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else self.config_class()

    @property
    def optim(self) -> OptimConfig:
        """The AdamW settings the Trainer builds its optimizer with: ``cfg.optim``, one object, so both stay equal."""
        return self.cfg.optim

    @optim.setter
    def optim(self, value: OptimConfig) -> None:
        self.cfg.optim = value

    def setup(self, policy: FlowPolicy) -> None:
        """Called once by the trainer before the first round (e.g. to freeze a reference copy)."""

    def attach(self, params: dict[str, torch.nn.Parameter]) -> None:
        """Called once by the trainer after ``setup`` and the data-parallel wrap, with the trained parameters by name as
        the optimizer sees them (sharded under FSDP): where a method keeps its own copy of them (DiffusionNFT's old
        policy), so that ``state_dict`` has its final shapes before a resume loads into it."""

    def end_round(self, optimizer_steps: int) -> None:
        """Called after each round's update (a skipped round's too) with the run's optimizer steps so far."""

    def validate(self, shared: SharedConfig) -> None:
        """Raise ValueError for knobs that do not fit the shared settings, before any model work."""
        if shared.num_generations < 2:
            raise ValueError("num_generations must be >= 2 for group-normalised advantages")
        cfg = self.cfg
        for knob, ok, rule in (("eta", lambda v: 0 <= v < 10, "in [0, 10)"), ("noise_level", lambda v: 0 <= v < 10, "in [0, 10)"),
                               ("clip_range", lambda v: 0 < v < 1, "in (0, 1)"), ("adv_clip_max", lambda v: v > 0, "> 0")):
            v = getattr(cfg, knob, None)
            if v is not None and not (isinstance(v, (int, float)) and ok(v)):
                raise ValueError(f"{knob} must be {rule}, got {v!r}")

    def rollout(self, policy: FlowPolicy, cond: Cond, init_noise: torch.Tensor, noise,
                shared: SharedConfig, round_idx: int = 0) -> Rollout:
        """``init_noise`` is (P, G, C, H, W) from the loop; shared-noise methods use member 0 of each group.
        ``noise(shape, dim)`` (``loop.PromptNoise``) draws the SDE noise, one ``shape`` block per prompt stacked
        along ``dim``, so a process holding a slice of the round's prompts draws their single-process noise."""
        raise NotImplementedError

    def advantages(self, rollout: Rollout, rewards: dict[str, torch.Tensor], weights: dict[str, float]) -> dict:
        """Fill ``rollout.transitions.adv`` (and ``mask``) from per-image rewards; return scalar stats to log."""
        raise NotImplementedError

    def update_groups(self, rollout: Rollout, gen: torch.Generator) -> list[torch.Tensor]:
        """Which transitions are trained (may narrow ``transitions.mask``) and the row indices of each optimizer
        step of the round, in order. ``gen`` is the round's training stream."""
        raise NotImplementedError

    def cost(self, shared: SharedConfig) -> Cost:
        raise NotImplementedError

    def lora(self, shared: SharedConfig) -> str:
        """The LoRA preset (``g2rpo.models.lora.LORA_PRESETS``) this method trains under ``shared``; '' = every weight.
        Default: the shared setting; Flow-GRPO brings its own."""
        return shared.lora

    def optimizer_steps(self, shared: SharedConfig) -> int:
        """Optimizer steps of a round in which every sample is trained (the dry run shows it)."""
        raise NotImplementedError

    def policy_loss(self, tr: Transitions, rows: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy term per (row, member) of ``rows`` given the policy's velocity ``v`` (L, C, H, W) at (x, sigma),
        and the likelihood ratio per pair (ones where a method has none): ((L, n), (L, n)). Default: the clipped PPO
        term of the Gaussian step sigma -> sigma_next that scored ``x_next`` at rollout (every GRPO method)."""
        L, n = len(rows), tr.n
        rep = lambda t: t.repeat_interleave(n, 0)  # noqa: E731  the n members share the row's start latent
        out = sde_step(rep(tr.x[rows]), rep(v), rep(tr.sigma[rows]), rep(tr.sigma_next[rows]), rep(tr.g[rows]),
                       next_sample=tr.x_next[rows].reshape(L * n, *tr.x.shape[1:]))
        return ppo_clip_loss(out.log_prob.view(L, n), tr.log_prob_old[rows], tr.adv[rows], self.clip_range)

    def extra_loss(self, policy: FlowPolicy, tr: Transitions, rows: torch.Tensor, v: torch.Tensor,
                   cond: Cond) -> torch.Tensor:
        """Extra loss per (row, member), (L, n) or (L, 1), added before masking (e.g. Flow-GRPO's KL); default none."""
        return torch.zeros(len(rows), 1)

    def loss_weight(self, tr: Transitions, rows: torch.Tensor) -> torch.Tensor | None:
        """Weight per (row, member) of ``rows``, (L, n) or (L, 1), multiplied into the PPO term plus ``extra_loss``
        before masking; the step still divides by the count of trained pairs. None (default) = all ones."""
        return None

    def state_dict(self) -> dict:
        """State of the method's own that a resumed run needs (the Trainer's checkpoint holds it as 'method'); {}
        (default) = none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``'s output."""

    @property
    def ema(self) -> EMAConfig | None:
        """The method's ``EMAConfig`` (weights averaged for evaluation) or None."""
        return self.cfg.ema

    @property
    def clip_range(self) -> float:
        return self.cfg.clip_range


def nfe_per_round(method: Method, shared: SharedConfig, official: bool = False) -> int:
    """Model evaluations of a round, a training forward+backward counted as one; ``official``: as the official code
    counts them (``Cost.nfe_rollout_official``)."""
    c = method.cost(shared)
    rollout = c.nfe_rollout_official if official and c.nfe_rollout_official is not None else c.nfe_rollout
    return shared.prompts_per_round * (rollout + c.nfe_train + c.nfe_reference)
