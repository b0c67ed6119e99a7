"""Shared tiny set-ups for tests: a random FLUX-class policy, hashed text, weight-free rewards."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from g2rpo.config import OptimConfig, SharedConfig
from g2rpo.loop import PromptNoise, Trainer, initial_noise
from g2rpo.models.flux import tiny_flux_policy
from g2rpo.models.text import HashTextEncoder
from g2rpo.rewards import Brightness, ChannelContrast

PROMPTS = ["a red apple", "a blue sky", "a green tree", "a yellow sun"]
REWARDS = {"brightness": Brightness(), "redness": ChannelContrast()}


def shared(**kw) -> SharedConfig:
    base = dict(num_steps=6, num_generations=3, prompts_per_round=2, rounds=1, rewards={"brightness": 1.0})
    return SharedConfig(**(base | kw))


def trainer(method, sh: SharedConfig, seed: int = 0) -> Trainer:
    return Trainer(tiny_flux_policy(seed), HashTextEncoder(), method, REWARDS, sh, PROMPTS)


def rollout(method, sh: SharedConfig, policy=None, round_idx: int = 0):
    policy = policy or tiny_flux_policy(0)
    cond = HashTextEncoder()(PROMPTS[: sh.prompts_per_round])
    with torch.no_grad():
        return policy, cond, method.rollout(policy, cond, initial_noise(sh, round_idx, policy.latent_shape),
                                            PromptNoise(sh.seed, "sde", round_idx, range(sh.prompts_per_round)), sh, round_idx)


def no_decay(lr: float = 1e-3) -> OptimConfig:
    return OptimConfig(lr=lr, weight_decay=0.0)


def configured(method_class, lr: float = 1e-4, **knobs):
    """``method_class`` with its config's defaults but ``knobs``, trained by AdamW at ``lr`` without weight decay."""
    m = method_class(method_class.config_class(**knobs))
    m.optim = no_decay(lr)  # the property sets cfg.optim too
    return m


ROOT = Path(__file__).resolve().parents[1]


def run_module(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the repository root (an entry point as users run it), output captured."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)
