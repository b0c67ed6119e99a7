"""Configuration: settings shared by every method of a comparison, kept apart from method knobs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch

from .schedules import TimestepConvention, flow_match_sigmas, shifted_sigmas


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

    def __post_init__(self):
        from .models.lora import LORA_PRESETS

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
        """Short hash of the shared block; runs are comparable only when it matches."""
        d = asdict(self)
        for name in ADDED_LATER:  # left out at their defaults, so digests recorded before they existed still match
            if d[name] == SharedConfig.__dataclass_fields__[name].default:
                del d[name]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


ADDED_LATER = ("lora", "gradient_checkpointing")


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


def assert_same_shared(blocks: dict[str, SharedConfig]) -> str:
    """Refuse to compare runs whose shared settings differ; returns the common digest."""
    digests = {name: b.digest() for name, b in blocks.items()}
    if len(set(digests.values())) > 1:
        ref_name, ref = next(iter(blocks.items()))
        diff = sorted({f for b in blocks.values() for f, v in asdict(b).items() if asdict(ref)[f] != v})
        raise ValueError(f"runs do not share settings (fields {', '.join(diff)} differ from {ref_name!r}): "
                         f"digests {digests}; compare only runs with identical shared blocks")
    return next(iter(digests.values()))
