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
    indist_prompts: list[str] = field(default_factory=list)
    """In-distribution evaluation prompts (compositions pretraining showed), scored beside the held-out ones and
    reported apart (``indist_scores_*.csv``, ``eval_indist/...``); empty where a tier has none."""
    summary: Callable[[list[str], dict], dict[str, float]] | None = None
    """Per-run summaries of an evaluation beyond reward means, from its prompts and per-prompt scores (the scenes'
    GenEval overall and per-skill strict pass); logged as ``eval/<key>`` (``eval_indist/<key>``)."""
    curve_rewards: tuple[str, ...] = ()
    """Rewards the learning curves score besides the in-domain ones (the scenes' strict pass)."""
