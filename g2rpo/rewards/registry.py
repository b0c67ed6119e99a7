"""The paper tier's reward registry: names, where their weights live, and one constructor for all of them.

Weights are never fetched implicitly in tests or offline runs: each path is a local file/folder, or a hub id that is
downloaded only when the network allows it (``weights.locate``). ``RewardPaths.under(root)`` is the layout that
``huggingface-cli download ORG/NAME --local-dir ROOT/NAME`` produces for each repository.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from . import Reward
from .clip_family import CLIPScore, HPSv21, PickScore
from .imagereward import ImageRewardScore


@dataclass
class RewardPaths:
    """Where each paper-tier reward's weights are: a local path, or a hub id (downloaded only with network)."""

    hps: str = "xswu/HPSv2"
    """HPS_v2.1_compressed.pt, or a folder holding it."""
    clip: str = "apple/DFN5B-CLIP-ViT-H-14-378"
    """Folder with open_clip_config.json and DFN5B open_clip weights (378 px; apple/DFN5B-CLIP-ViT-H-14 is 224 px)."""
    pickscore: str = "yuvalkirstain/PickScore_v1"
    """transformers CLIPModel folder of PickScore_v1."""
    pickscore_processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    """CLIP-H processor folder (image preprocessing and tokenizer) PickScore is used with."""
    imagereward: str = "THUDM/ImageReward"
    """ImageReward.pt, or a folder holding it."""
    imagereward_tokenizer: str = "bert-base-uncased"
    """BERT tokenizer folder ImageReward's BLIP text encoder uses."""

    @classmethod
    def under(cls, root: str | Path) -> "RewardPaths":
        """Every repository as a folder named after it under ``root``."""
        root = Path(root).expanduser().resolve()  # absolute, so no folder is mistaken for a hub id
        return cls(**{f.name: str(root / f.default.split("/")[-1]) for f in fields(cls)})


def _hps(p: RewardPaths) -> Reward:
    return HPSv21(p.hps)


def _clip(p: RewardPaths) -> Reward:
    return CLIPScore(p.clip)


def _pickscore(p: RewardPaths) -> Reward:
    return PickScore(p.pickscore, p.pickscore_processor)


def _imagereward(p: RewardPaths) -> Reward:
    return ImageRewardScore(p.imagereward, tokenizer=p.imagereward_tokenizer)


PAPER_REWARDS: dict[str, Callable[[RewardPaths], Reward]] = {
    "hps": _hps,
    "clip": _clip,
    "pickscore": _pickscore,
    "pickscore_100": _pickscore,
    "pickscore_26": _pickscore,
    "imagereward": _imagereward,
}
"""name -> constructor. The PickScore names share one model and differ only in their divisor."""


def paper_rewards(names: list[str], paths: RewardPaths | None = None) -> dict[str, Reward]:
    """The named rewards, each model loaded once; KeyError names the unknown ones."""
    unknown = [n for n in names if n not in PAPER_REWARDS]
    if unknown:
        raise KeyError(f"unknown paper-tier rewards {unknown}; known: {', '.join(PAPER_REWARDS)}")
    paths = paths or RewardPaths()
    built: dict[Callable, Reward] = {}
    out = {}
    for n in names:
        make = PAPER_REWARDS[n]
        if make not in built:
            built[make] = make(paths)
        out[n] = named(built[make], n)
    return out


def named(model: Reward, name: str) -> Reward:
    """``model`` reporting as reward ``name``: the PickScore scales are views of one model (no second copy)."""
    return model.as_scale(name) if name.startswith("pickscore") else model
