"""The ``Tier`` record: what a preset's ``model`` name loads. Built by the loaders in ``g2rpo.tiers`` and by
``g2rpo.models.pipelines`` (which ``g2rpo.tiers`` imports), so it lives apart from both and imports point one way."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .policy import FlowPolicy, TextEncoder
from .rewards import Reward


@dataclass
class Tier:
    """Everything a run needs besides the method and the shared settings."""

    name: str
    make_policy: Callable[[], FlowPolicy]
    """A fresh, trainable copy of the base model."""
    text: TextEncoder
    """Frozen text encoder (cached per prompt)."""
    rewards: dict[str, Reward]
    """Every reward of the tier; those in the shared settings are in-domain, the rest out-of-domain."""
    train_prompts: list[str]
    """Prompts RL trains on."""
    eval_prompts: list[str]
    """Held-out prompts (never trained on) for evaluation."""
    settings: dict[str, str] = field(default_factory=dict)
    """What the environment chose for this tier (resolution, prompt files, text length), recorded beside every
    checkpoint so that an evaluation in another setting is refused rather than silently run; empty where the tier is
    fixed by the code (the tiny and pocket tiers)."""
