"""Named settings. Each preset gives the shared block and per-method knob overrides.

``paper`` is the G2RPO paper's FLUX.1-dev setting (algorithms.md §7): N = 16, shift 3, G = 12,
a = 0.7, M = 0..7, Lambda = {1, 2, 3} (the official scripts use {1, 2}: pass
``granular_list=(1, 2)`` to match them), lr 2e-6, clip 1e-4, advantage clip 5, HPS + CLIP rewards.
"""
from __future__ import annotations

from .config import SharedConfig

PRESETS: dict[str, dict] = {
    "paper": {
        "shared": SharedConfig(model="flux-dev", num_steps=16, shift=3.0, num_generations=12, prompts_per_round=1,
                               rounds=300, rewards={"hps": 1.0, "clip": 1.0}, precision="bf16"),
        "g2rpo": {"eta": 0.7, "eta_step_list": tuple(range(8)), "granular_list": (1, 2, 3)},
    },
    "smoke": {
        "shared": SharedConfig(model="tiny", num_steps=6, shift=3.0, num_generations=3, prompts_per_round=2, rounds=2,
                               rewards={"brightness": 1.0, "redness": 1.0}),
        "g2rpo": {"eta_step_list": (0, 1, 2)},
    },
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
