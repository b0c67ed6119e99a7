"""Model tiers: what a preset's ``model`` name loads (policy, text encoder, rewards, prompt sets).

'flux-dev' and 'sd35' load FLUX.1-dev and SD3.5-medium through diffusers (``g2rpo.models.pipelines``), configured by
G2RPO_FLUX_DIR / G2RPO_SD35_DIR, G2RPO_TRAIN_PROMPTS, G2RPO_EVAL_PROMPTS, G2RPO_REWARD_DIR, G2RPO_RESOLUTION and
G2RPO_TEXT_CACHE (described there).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from .models.flux import tiny_flux_policy
from .models.pipelines import FLUX, SD35, tier_from_env
from .models.sd3 import tiny_sd3_policy
from .models.text import HashTextEncoder
from .pocket import binding, scenes
from .pocket.data import prompts
from .pocket.model import SCENES_CONFIG, SCENES_WEIGHTS, load_generator
from .pocket.rewards import ImageNetConfidence, ImageNetZeroShot, SceneAlignment, pocket_rewards, text_encoder
from .pocket.verifier import SceneVerifier, geneval_summary
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

    if task == "scenes":
        return scenes_tier()
    if task == "binding":
        rewards = {"pocket_binding": binding.Binding()} | pocket_rewards()
        return Tier("pocket-binding", make_policy, text_encoder(), rewards, binding.prompts("train"),
                    binding.prompts("heldout"))
    return Tier("pocket", make_policy, text_encoder(), pocket_rewards(), prompts("train"), prompts("heldout"))


def interleave(prompts: list[str], key) -> list[str]:
    """Round-robin over the groups ``key`` gives, groups in first-seen order: the first n prompts of the list
    (the curve set) cover every group."""
    groups: dict = {}
    for p in prompts:
        groups.setdefault(key(p), []).append(p)
    out, lists = [], list(groups.values())
    for i in range(max(map(len, lists), default=0)):
        out += [g[i] for g in lists if i < len(g)]
    return out


def scenes_tier() -> Tier:
    """The scenes generator on GenEval-style prompts: trained on the verifier's partial credit, scored on its strict
    pass per skill, on held-out and in-distribution prompts, with the learned scenes head and the ImageNet rewards
    out of domain."""
    def make_policy() -> FlowPolicy:
        return load_generator(SCENES_WEIGHTS, SCENES_CONFIG).requires_grad_(True)

    rewards = {r.name: r for r in (SceneVerifier("partial"), SceneVerifier("strict"), SceneAlignment(),
                                   ImageNetZeroShot(), ImageNetConfidence())}
    by_skill = lambda split: interleave(scenes.prompts(split), scenes.skill_of)  # noqa: E731
    return Tier("pocket-scenes", make_policy, text_encoder(), rewards, by_skill("train"), by_skill("heldout"),
                indist_prompts=by_skill("indist"), curve_rewards=("scenes_strict",), summary=geneval_summary)


def _flux_dev() -> Tier:
    return tier_from_env(FLUX)


def _sd35() -> Tier:
    return tier_from_env(SD35)


LOADERS: dict[str, Callable[[], Tier]] = {"tiny": _tiny, "tiny-sd3": lambda: _tiny("sd3"), "pocket": _pocket,
                                          "pocket-binding": lambda: _pocket("binding"),
                                          "pocket-scenes": lambda: _pocket("scenes"),
                                          "flux-dev": _flux_dev, "sd35": _sd35}


SD3_TIERS = ("sd35", "tiny-sd3")


def architecture(model: str) -> str:
    """'sd3' for the SD3-class tiers, else 'flux' (the FLUX-class tiers, and a model given as a path)."""
    return "sd3" if model in SD3_TIERS else "flux"


SKILL_TIERS = ("pocket-scenes",)


def check_skills(model: str, skills: tuple[str, ...]) -> None:
    """ValueError (one line) unless ``skills`` are known scenes skills, of a tier that has them, leaving a non-empty
    train and held-out split; no model is loaded."""
    if not skills:
        return
    if model not in SKILL_TIERS:
        raise ValueError(f"skills {','.join(skills)}: only the scenes tier has skills, not {model!r}")
    unknown = [k for k in skills if k not in scenes.SKILLS]
    if unknown:
        raise ValueError(f"unknown skill(s) {', '.join(unknown)}; choose from {', '.join(scenes.SKILLS)}")
    for split in ("train", "heldout"):
        if not [p for p in scenes.prompts(split) if scenes.skill_of(p) in skills]:
            raise ValueError(f"skills {','.join(skills)} leave the {split} split empty (single_object has no held-out "
                             f"prompt: every shape is needed to draw the others)")


def restrict(tier: Tier, skills: tuple[str, ...]) -> Tier:
    """The tier with only the prompts of ``skills`` (all when empty), after ``check_skills``."""
    if not skills:
        return tier
    keep = lambda ps: [p for p in ps if scenes.skill_of(p) in skills]  # noqa: E731
    return dataclasses.replace(tier, train_prompts=keep(tier.train_prompts), eval_prompts=keep(tier.eval_prompts),
                               indist_prompts=keep(tier.indist_prompts))


def check_tier(name: str, skills: tuple[str, ...] = ()) -> None:
    """What ``load_tier`` refuses (KeyError, ValueError), found without loading anything: for checking flags first."""
    if name not in LOADERS:
        raise KeyError(f"model tier {name!r} cannot be loaded here; available: {', '.join(LOADERS)}")
    check_skills(name, skills)


def load_tier(name: str, skills: tuple[str, ...] = ()) -> Tier:
    check_tier(name, skills)
    return restrict(LOADERS[name](), skills)
