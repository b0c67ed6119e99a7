"""Method names as they appear in flags and tables -> method objects.

Each name belongs to a family whose knobs a preset sets (``g2rpo-wo-mgai`` takes the ``g2rpo`` knobs,
then fixes Lambda = {1}).
"""
from __future__ import annotations

import dataclasses

from .granular import G2RPO, G2RPOConfig
from .method import Method


def _g2rpo(**kw) -> Method:
    return G2RPO(G2RPOConfig(**kw))


def _g2rpo_wo_mgai(**kw) -> Method:
    m = G2RPO(G2RPOConfig(**(kw | {"granular_list": (1,)})))
    m.name = "g2rpo-wo-mgai"
    return m


def _baseline(module: str, cls: str, cfg: str):
    def make(**kw) -> Method:
        import importlib

        mod = importlib.import_module(f"baselines.{module}")
        return getattr(mod, cls)(getattr(mod, cfg)(**kw))

    return make


METHODS = {
    "g2rpo": ("g2rpo", _g2rpo),
    "g2rpo-wo-mgai": ("g2rpo", _g2rpo_wo_mgai),
    "flowgrpo": ("flowgrpo", _baseline("flowgrpo", "FlowGRPO", "FlowGRPOConfig")),
    "dancegrpo": ("dancegrpo", _baseline("dancegrpo", "DanceGRPO", "DanceGRPOConfig")),
    "mixgrpo": ("mixgrpo", _baseline("mixgrpo", "MixGRPO", "MixGRPOConfig")),
}


def make_method(name: str, preset_knobs: dict | None = None, lr: float | None = None, **overrides) -> Method:
    """Build a method by name: official defaults <- the preset's knobs for its family <- explicit overrides; ``lr``
    (a rate set explicitly: --lr, a sweep) replaces the learning rate of the AdamW settings those give."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    family, factory = METHODS[name]
    knobs = (preset_knobs or {}).get(family, {}) | overrides
    if lr is not None:  # rebuilt with the settings as a knob: a rate given explicitly (Flow-GRPO checks it)
        knobs |= {"optim": dataclasses.replace(factory(**knobs).optim, lr=lr)}
    return factory(**knobs)
