"""GenEval's rules at pocket scale: a verifier of scenes prompts from the pixels, no network.

Detection: a pixel has a colour when its hue is nearest that colour's target and close to it, saturated and bright
enough (``binding``'s hue rule); each colour's 4-connected components of at least ``MIN_AREA`` pixels are objects; an
object's class is the shape whose template, drawn to fill the object's box, has the highest IoU with it, and counts
only when that IoU reaches ``MIN_IOU`` and the box's side and aspect lie in range (otherwise it is a malformed object).
Position is GenEval's rule on the boxes (``scenes.relations``).

Each prompt is a list of atoms (GenEval's clauses: count of each named shape, its colour, the relation) plus one
clean-canvas atom: no object beyond those named (malformed ones included) and at most ``MAX_JUNK`` of the foreground
outside objects. GenEval allows unnamed extra objects; here they fail, because an RL policy would otherwise learn to
scatter shapes. A canvas more than ``MAX_FOREGROUND`` covered scores 0 on every atom (the fill-the-canvas hack).
``strict`` = every atom holds (GenEval's all-or-nothing ``correct``), ``partial`` = the atoms' mean with a count atom
worth 1 - |found - n| / n (GenEval's partial score), for training.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from ..rewards import Reward
from . import scenes
from .binding import COLOURS as HUES, HUE_TOLERANCE, MIN_SATURATION, MIN_VALUE, WHITE

MIN_AREA = 6
"""Components smaller than this (pixels) are specks: neither objects nor junk (pixel noise on the white)."""
MIN_IOU = 0.6
"""An object's best template IoU must reach this for it to have a shape; below, it is a malformed blob."""
SIDE_RANGE = (6, 20)
"""Accepted box side (largest of width, height), in pixels; the renderer draws 10-14."""
MAX_ASPECT = 1.5
"""Accepted ratio of box width to height (either way); the renderer draws 1."""
MAX_JUNK = 0.25
"""Largest share of foreground pixels outside every object (specks apart) on a clean canvas (a render's edge blends
are ~5-15%)."""
MAX_FOREGROUND = 0.5
"""Largest share of the canvas in foreground; four of the largest objects cover < 0.35."""


@dataclass
class Found:
    """One detected object: its class (None when malformed), colour, box (x0, y0, x1, y1) and best IoU."""

    shape: str | None
    colour: str
    box: tuple[float, float, float, float]
    iou: float


@dataclass
class Detection:
    """Everything the verifier read off one image."""

    objects: list[Found] = field(default_factory=list)
    foreground: float = 0.0
    """Share of the canvas in foreground."""
    junk: float = 0.0
    """Share of the foreground outside every object."""

    def valid(self) -> list[Found]:
        return [o for o in self.objects if o.shape is not None]


def colour_labels(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """((H, W) colour index or -1, (H, W) foreground mask) of one (3, H, W) image in [0, 1]; numpy, since torch's
    per-call overhead dominates on 48 x 48 pixels."""
    x = image.detach().cpu().float().numpy()
    mx, mn = x.max(0), x.min(0)
    d = np.maximum(mx - mn, 1e-6)
    r, g, b = x
    with np.errstate(invalid="ignore"):
        h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60
    s = (mx - mn) / np.maximum(mx, 1e-6)
    dist = np.abs(h[..., None] - np.array(list(HUES.values()), dtype=np.float32))
    dist = np.minimum(dist, 360 - dist)
    which, nearest = dist.argmin(-1), dist.min(-1)
    fg = mn < WHITE
    ok = (nearest < HUE_TOLERANCE) & (s > MIN_SATURATION) & (mx > MIN_VALUE) & fg
    return np.where(ok, which, -1), fg


def classify(mask: np.ndarray) -> tuple[str | None, float]:
    """(best shape or None, its IoU) of a component's mask cropped to its box."""
    h, w = mask.shape
    side, aspect = max(h, w), max(h, w) / max(min(h, w), 1)
    best, iou = None, 0.0
    for shape in scenes.SHAPES:
        t = scenes.template(shape, w, h)
        u = (t | mask).sum()
        score = float((t & mask).sum() / u) if u else 0.0
        if score > iou:
            best, iou = shape, score
    ok = iou >= MIN_IOU and SIDE_RANGE[0] <= side <= SIDE_RANGE[1] and aspect <= MAX_ASPECT
    return (best if ok else None), iou


def detect(image: torch.Tensor) -> Detection:
    """The objects of one (3, H, W) image in [0, 1]."""
    labels, fg = colour_labels(image)
    names = list(HUES)
    out, object_mask = Detection(), np.zeros(fg.shape, dtype=bool)
    for c in np.unique(labels[labels >= 0]):
        comps, n = ndimage.label(labels == c)
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            mask = comps[sl] == k
            area = int(mask.sum())
            if area < MIN_AREA:
                continue
            shape, iou = classify(mask)
            box = (float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop))
            out.objects.append(Found(shape, names[c], box, iou))
            object_mask[sl] |= mask
    n_fg = int(fg.sum())
    out.foreground = n_fg / fg.size
    # foreground outside every object, specks (components under MIN_AREA, e.g. pixel noise on the white) left out
    rest, _ = ndimage.label(fg & ~object_mask)
    sizes = np.bincount(rest.ravel())[1:]
    out.junk = float(sizes[sizes >= MIN_AREA].sum()) / n_fg if n_fg else 0.0
    return out


def atoms(spec: scenes.Spec, d: Detection) -> dict[str, float]:
    """Each atom of the prompt read off the detection: 1 holds, 0 fails (a count atom may be partial)."""
    if d.foreground > MAX_FOREGROUND:
        return {"canvas": 0.0}
    valid = d.valid()
    out = {}
    for i, c in enumerate(spec.clauses):
        found = [o for o in valid if o.shape == c.shape]
        out[f"count:{c.shape}"] = max(0.0, 1 - abs(len(found) - c.count) / c.count)
        if c.colour:
            out[f"colour:{c.shape}"] = float(sum(o.colour == c.colour for o in found) >= c.count)
    if spec.relation:
        a = [o for o in valid if o.shape == spec.clauses[0].shape]
        b = [o for o in valid if o.shape == spec.clauses[1].shape]
        out["position"] = float(bool(a and b) and all(spec.relation in scenes.relations(x.box, y.box) for x in a for y in b))
    named = {c.shape for c in spec.clauses}
    extra = sum(o.shape not in named for o in d.objects)
    out["clean"] = float(extra == 0 and d.junk <= MAX_JUNK)
    return out


def verify(image: torch.Tensor, prompt: str) -> tuple[float, float]:
    """(strict pass, partial credit) of one image for its prompt."""
    a = atoms(scenes.parse(prompt), detect(image))
    return float(all(v == 1.0 for v in a.values())), float(np.mean(list(a.values())))


class SceneVerifier(Reward):
    """In-domain, verifiable: GenEval's rules on the pixels (``mode`` 'partial' for training, 'strict' for the pass)."""

    checkpoint = "rules (g2rpo/pocket/verifier.py), no weights"

    def __init__(self, mode: str = "partial") -> None:
        if mode not in ("partial", "strict"):
            raise ValueError(f"mode must be 'partial' or 'strict', got {mode!r}")
        self.mode = mode
        self.name = "scenes" if mode == "partial" else "scenes_strict"
        self.units = ("mean over the prompt's atoms (counts, colours, relation, clean canvas), count atoms "
                      "1 - |found - n| / n" if mode == "partial" else "1 when every atom of the prompt holds, else 0")
        self.scale = "[0, 1]; a ground-truth render scores 1"

    def score(self, images, prompts):
        specs = [scenes.parse(p) for p in prompts]  # every prompt checked before any image is read
        out = []
        for img, spec in zip(images.cpu(), specs):
            a = atoms(spec, detect(img.clamp(0, 1)))
            out.append(all(v == 1.0 for v in a.values()) if self.mode == "strict" else np.mean(list(a.values())))
        return torch.tensor(out, dtype=torch.float32)


def skill_means(prompts: list[str], values) -> dict[str, float]:
    """Mean of per-prompt values by GenEval skill (skills with no prompt left out) and ``overall``, GenEval's
    mean of the skills' means (not of the prompts)."""
    vals = np.asarray(values, dtype=float)
    skills = np.array([scenes.skill_of(p) for p in prompts])
    out = {k: float(vals[skills == k].mean()) for k in scenes.SKILLS if (skills == k).any()}
    return out | {"overall": float(np.mean(list(out.values())))}


def geneval_summary(prompts: list[str], scores: dict) -> dict[str, float]:
    """A run's GenEval-style summary from its per-prompt strict pass: ``geneval/overall`` and ``geneval/<skill>``."""
    return {f"geneval/{k}": v for k, v in skill_means(prompts, scores["scenes_strict"].numpy()).items()}
