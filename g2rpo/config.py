"""Configuration: settings shared by every method of a comparison, kept apart from method knobs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch

from .ema import EMAConfig
from .models.lora import LORA_PRESETS
from .schedules import TimestepConvention, flow_match_sigmas, shifted_sigmas


def int_list(text: str) -> tuple[int, ...]:
    """'0,1,2,3', '0-3' or '0-1,3' -> a tuple of distinct integers: the one parser of step and granularity lists
    (every tuple-of-ints knob from the command line: ``benchmarks.plan.parse_value``). ValueError, one line, for anything else."""
    values: list[int] = []
    for tok in (t.strip() for t in text.split(",")):
        try:
            if "-" in tok[1:]:
                lo, hi = (int(x) for x in tok.split("-", 1))
                if hi < lo:
                    raise ValueError
                values += range(lo, hi + 1)
            else:
                values.append(int(tok))
        except ValueError:
            raise ValueError(f"{tok!r} is not an integer or a range a-b (in {text!r})") from None
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate values in {text!r}")
    return tuple(values)


@dataclass
class SharedConfig:
    """Settings common to all methods of a comparison (algorithms.md §7); hashed into every run."""

    model: str = "tiny"
    """Policy to train: 'tiny' (random FLUX-class, tests), 'pocket', or a path for the paper tier."""
    num_steps: int = 16
    """N, sampling steps of the rollout schedule."""
    shift: float = 3.0
    """Schedule shift: sigma = shift*s / (1 + (shift-1)*s)."""
    schedule: str = "shifted"
    """'shifted' (fixed shift on linspace, FLUX RL code) or 'flow_match' (diffusers' grid, SD3.5 / Flow-GRPO)."""
    timestep_convention: str = TimestepConvention.TRUNCATE_3.value
    """'truncate3' feeds int(sigma*1000)/1000 (official FLUX code); 'float' feeds sigma."""
    num_generations: int = 12
    """G, images per prompt (group size)."""
    prompts_per_round: int = 1
    """Prompts (groups) per round; the paper uses one per GPU on 16 GPUs."""
    rounds: int = 300
    """Training rounds (a round = rollout, rewards, update)."""
    seed: int = 0
    """Seeds prompt order, initial noises and SDE noise; the same seed gives every method the same prompts and x_T."""
    rewards: dict[str, float] = field(default_factory=lambda: {"brightness": 1.0})
    """Reward models trained on and their weights w_m (official G2RPO: HPS 1 + CLIP 1)."""
    precision: str = "fp32"
    """Model compute dtype: 'fp32' or 'bf16' autocast over fp32 weights (the SDE step and log-probs are always fp32)."""
    lora: str = ""
    """Train a LoRA adapter instead of every weight: a name of g2rpo.models.lora.LORA_PRESETS ('' = full fine-tune)."""
    gradient_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass (same gradients, less memory)."""
    min_valid_frac: float = 0.5
    """A round whose images have finite rewards for fewer than this fraction is skipped (no update, logged)."""
    max_batch: int = 0
    """Largest rollout batch per model call (0 = no limit); bounds memory, not results."""
    max_train_batch: int = 0
    """Largest training batch per forward+backward (0 = no limit); gradients are accumulated across chunks."""
    compile: bool = False
    """torch.compile the rollout forwards (``FlowPolicy.compiled``); speed, not results (fp32 rounding apart)."""
    skills: tuple[str, ...] = ()
    """The scenes task's GenEval skills whose prompts are trained and evaluated on (``g2rpo.tiers.restrict``);
    () = every skill; only the scenes tier has skills."""

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.lora and self.lora not in LORA_PRESETS:
            raise ValueError(f"lora {self.lora!r} is not one of {', '.join(LORA_PRESETS)} ('' = full fine-tune)")
        TimestepConvention(self.timestep_convention)  # ValueError names the bad value

    def sigmas(self) -> torch.Tensor:
        if self.schedule == "shifted":
            return shifted_sigmas(self.num_steps, self.shift)
        if self.schedule == "flow_match":
            return flow_match_sigmas(self.num_steps, self.shift)
        raise ValueError(f"unknown schedule {self.schedule!r}: use 'shifted' or 'flow_match'")

    def digest(self) -> str:
        """Short hash of the whole shared block, seed and rounds included: the identity of one run's settings. Runs
        of one comparison differ in it (seeds; rounds under an NFE budget); ``comparable_digest`` is what must match."""
        return _hash(asdict(self))

    def comparable(self) -> dict:
        """The fields every run of one comparison must share (all but ``PER_RUN``)."""
        return {k: v for k, v in asdict(self).items() if k not in PER_RUN}

    def comparable_digest(self) -> str:
        """Short hash of ``comparable()``: runs may share one table only when it matches."""
        return _hash(self.comparable())


ADDED_LATER = ("lora", "gradient_checkpointing", "compile", "skills")
"""Fields added after digests were recorded; a new field goes here too, so that recorded digests (both kinds) still
match while it is at its default."""

PER_RUN = ("seed", "rounds", "max_batch", "max_train_batch", "gradient_checkpointing", "compile")
"""Fields that may differ between the runs of one comparison, the rest must match (``comparable``). ``seed``: the
comparison is over seeds; ``rounds``: under an NFE budget each method runs its own number of rounds (the tables report
NFE and rounds); ``max_batch``, ``max_train_batch`` and ``gradient_checkpointing``: they bound memory (chunked calls,
accumulated gradients, recomputed activations), not results; ``compile``: speed, not results. Everything else changes what is trained or how it is
scored: the model, the schedule (num_steps, shift, schedule, timestep_convention), the group and batch of prompts
(num_generations, prompts_per_round), rewards and weights, precision, lora (full fine-tune vs adapter; to move here if
the LoRA becomes a per-method setting) and min_valid_frac (which rounds update)."""


def _hash(d: dict) -> str:
    for name in ADDED_LATER:  # left out at their defaults, so digests recorded before they existed still match
        if name in d and d[name] == SharedConfig.__dataclass_fields__[name].default:
            del d[name]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class OptimConfig:
    """AdamW settings of a method (its official defaults live in the method's config)."""

    lr: float = 2e-6
    """Learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip per optimizer step."""


@dataclass
class MethodConfig:
    """Knobs every method has. A method's config inherits them and overrides a default only where its official one
    differs; ``dataclasses.asdict`` of it is what runs record as the method's knobs."""

    clip_range: float = 1e-4
    """PPO ratio clip epsilon."""
    adv_clip_max: float = 5.0
    """Advantages are clamped to +-adv_clip_max (after summing over rewards, and G2RPO's granularities)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW settings (default G2RPO's official: lr 2e-6, wd 1e-4, grad clip 1.0)."""
    ema: EMAConfig | None = None
    """EMA of the weights for evaluation (g2rpo.ema.EMAConfig); None = live weights, as the G2RPO, DanceGRPO and
    MixGRPO codes."""


def comparable_differences(blocks: dict[str, dict]) -> list[str]:
    """Comparable fields (``SharedConfig.comparable()``, here as recorded dicts) in which any block differs from the
    first; a field that a block does not record counts as its default when it is in ``ADDED_LATER``."""
    fields = SharedConfig.__dataclass_fields__
    missing = object()

    def value(b, f):
        return b.get(f, fields[f].default if f in ADDED_LATER else missing)

    ref = next(iter(blocks.values()), {})
    names = sorted({f for b in blocks.values() for f in (*b, *ref) if f not in PER_RUN})
    return [f for f in names if any(value(b, f) != value(ref, f) for b in blocks.values())]


def assert_same_shared(blocks: dict[str, SharedConfig]) -> str:
    """Refuse (ValueError, one line naming the fields) to compare runs whose comparable shared settings differ; seed,
    rounds and the other ``PER_RUN`` fields may differ. Returns the common ``comparable_digest``."""
    digests = {name: b.comparable_digest() for name, b in blocks.items()}
    if len(set(digests.values())) > 1:
        diff = comparable_differences({name: b.comparable() for name, b in blocks.items()})
        ref_name = next(iter(blocks))
        raise ValueError(f"runs do not share settings ({', '.join(diff)} differ from {ref_name!r}; comparable "
                         f"digests {digests}); compare only runs whose shared blocks differ at most in "
                         f"{', '.join(PER_RUN)}")
    return next(iter(digests.values()))
