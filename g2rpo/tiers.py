"""Model tiers: what a preset's ``model`` name loads (policy, text encoder, rewards, prompt sets).

'flux-dev' and 'sd35' load FLUX.1-dev and SD3.5-medium through diffusers (``g2rpo.models.pipelines``), configured by
G2RPO_FLUX_DIR / G2RPO_SD35_DIR, G2RPO_TRAIN_PROMPTS, G2RPO_EVAL_PROMPTS, G2RPO_REWARD_DIR, G2RPO_RESOLUTION and
G2RPO_TEXT_CACHE (described there).
"""
from __future__ import annotations

from typing import Callable

from .models.flux import tiny_flux_policy
from .models.pipelines import FLUX, SD35, tier_from_env
from .models.sd3 import tiny_sd3_policy
from .models.text import HashTextEncoder
from .pocket import binding
from .pocket.data import prompts
from .pocket.model import load_generator
from .pocket.rewards import pocket_rewards, text_encoder
from .policy import FlowPolicy
from .rewards import Brightness, ChannelContrast, Contrast
from .tier import Tier

TINY_TRAIN = ["a red apple", "a blue whale", "a green frog", "a yellow star", "a purple flower", "a white cloud"]
TINY_EVAL = ["an orange fox", "a black cat", "a pink pig", "a grey wolf"]


def _tiny(kind: str = "flux") -> Tier:
    """Tiny in-code models with weight-free rewards: the FLUX class ('tiny') or the SD3 class with true CFG
    ('tiny-sd3'), for tests and smoke runs."""
    rewards = {r.name: r for r in (Brightness(), ChannelContrast(), Contrast())}
    make = {"flux": tiny_flux_policy, "sd3": tiny_sd3_policy}[kind]
    name = "tiny" if kind == "flux" else f"tiny-{kind}"
    return Tier(name, lambda: make(0), HashTextEncoder(), rewards, TINY_TRAIN, TINY_EVAL)


def _pocket(task: str = "emoji") -> Tier:
    """The pocket generator on one of its tasks: 'emoji' (emoji captions, the learned heads' task) or 'binding'
    ("a {colour} {object} emoji" scored by rules, ``pocket/binding.py``), each with its own prompts and rewards."""
    def make_policy() -> FlowPolicy:
        return load_generator().requires_grad_(True)  # loaded frozen for sampling; RL trains every weight

    if task == "binding":
        rewards = {"pocket_binding": binding.Binding()} | pocket_rewards()
        return Tier("pocket-binding", make_policy, text_encoder(), rewards, binding.prompts("train"),
                    binding.prompts("heldout"))
    return Tier("pocket", make_policy, text_encoder(), pocket_rewards(), prompts("train"), prompts("heldout"))


def _flux_dev() -> Tier:
    return tier_from_env(FLUX)


def _sd35() -> Tier:
    return tier_from_env(SD35)


LOADERS: dict[str, Callable[[], Tier]] = {"tiny": _tiny, "tiny-sd3": lambda: _tiny("sd3"), "pocket": _pocket,
                                          "pocket-binding": lambda: _pocket("binding"),
                                          "flux-dev": _flux_dev, "sd35": _sd35}


SD3_TIERS = ("sd35", "tiny-sd3")


def architecture(model: str) -> str:
    """'sd3' for the SD3-class tiers, else 'flux' (the FLUX-class tiers, and a model given as a path)."""
    return "sd3" if model in SD3_TIERS else "flux"


def load_tier(name: str) -> Tier:
    if name not in LOADERS:
        raise KeyError(f"model tier {name!r} cannot be loaded here; available: {', '.join(LOADERS)}")
    return LOADERS[name]()
