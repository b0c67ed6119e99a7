"""Pocket scenes: procedural GenEval-style scenes, their captions by skill, and the held-out compositions.

A scene is 1-4 flat-coloured shapes (5 classes x 6 colours) on white, one per cell of a coarse 3 x 3 grid with a
little jitter, drawn 4x supersampled and box-filtered to ``SIZE`` px (``render``; deterministic from a seed). Captions
use GenEval's six templates and tags (djghosh13/geneval): single_object, two_object, counting (2-4), colors,
position (left of / right of / above / below, GenEval's rule on the boxes) and color_attr.

Held-out compositions (``assets/scenes_split.json``, made once by ``python -m g2rpo.pocket.scenes``; the committed
file is the only source of truth): colour-shape pairs that no pretraining image shows (not even uncaptioned),
one count per shape, ordered (shape, relation, shape) triples and two-object pairs that no pretraining caption
names. A prompt with any held-out atom is held-out; RL trains on in-distribution prompts only.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations

import numpy as np
from PIL import Image, ImageDraw

from .data import ASSETS

SIZE = 48
"""Image side in pixels: a 3 x 3 grid of 16 px cells holds four 10-14 px objects with room for a relation."""
GRID = 3
"""Cells per side."""
OBJECT_SIZE = (11, 14)
"""Inclusive range of an object's box side, in pixels."""
JITTER = 2
"""Largest offset of an object's box from its cell's centre, in whole pixels; smaller where the object is larger,
so that neighbouring objects stay at least 2 px apart (``jitter``)."""
SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {"red": (220, 30, 30), "orange": (245, 140, 0), "yellow": (240, 210, 0), "green": (30, 160, 50),
           "blue": (30, 90, 220), "purple": (140, 50, 200)}
"""Colour words and their RGB; hues sit near ``binding.COLOURS``' targets so the verifier's hue rule reads them."""
BACKGROUND = (255, 255, 255)
NUMBERS = {2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
SKILLS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's tags, in its order."""
POSITION_THRESHOLD = 0.1
"""GenEval's: the centre offset shrinks by this times the sum of the two boxes' sizes before the relation is read."""
SPLIT_FILE = ASSETS / "scenes_split.json"
SPLITS = ("train", "heldout", "indist")
"""RL train prompts, held-out evaluation prompts, in-distribution evaluation prompts (a subset of train)."""


class SceneError(ValueError):
    """A prompt, skill or split the scenes task does not know; reported as one line."""


@dataclass(frozen=True)
class Clause:
    """One object group a prompt asks for: ``count`` objects of ``shape``, of ``colour`` when given."""

    shape: str
    count: int = 1
    colour: str | None = None


@dataclass(frozen=True)
class Spec:
    """What a prompt asks for: its skill, its clauses and, for position, the relation of clause 0 to clause 1."""

    skill: str
    clauses: tuple[Clause, ...]
    relation: str | None = None


@dataclass(frozen=True)
class Obj:
    """One drawn object: its class, colour, centre (x right, y down, px) and box side (px)."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: int


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def caption(spec: Spec) -> str:
    """GenEval's template for a spec."""
    c = spec.clauses
    if spec.skill == "single_object":
        return f"a photo of {_a(c[0].shape)}"
    if spec.skill == "two_object":
        return f"a photo of {_a(c[0].shape)} and {_a(c[1].shape)}"
    if spec.skill == "counting":
        return f"a photo of {NUMBERS[c[0].count]} {c[0].shape}s" if c[0].shape != "cross" else \
            f"a photo of {NUMBERS[c[0].count]} crosses"
    if spec.skill == "colors":
        return f"a photo of {_a(c[0].colour + ' ' + c[0].shape)}"
    if spec.skill == "position":
        return f"a photo of {_a(c[0].shape)} {spec.relation} {_a(c[1].shape)}"
    return f"a photo of {_a(c[0].colour + ' ' + c[0].shape)} and {_a(c[1].colour + ' ' + c[1].shape)}"


def all_specs() -> list[Spec]:
    """Every prompt of the task, skill by skill (5 + 20 + 15 + 30 + 80 + 600)."""
    out = [Spec("single_object", (Clause(s),)) for s in SHAPES]
    out += [Spec("two_object", (Clause(a), Clause(b))) for a, b in permutations(SHAPES, 2)]
    out += [Spec("counting", (Clause(s, n),)) for s in SHAPES for n in NUMBERS]
    out += [Spec("colors", (Clause(s, 1, c),)) for s in SHAPES for c in COLOURS]
    out += [Spec("position", (Clause(a), Clause(b)), r) for a, b in permutations(SHAPES, 2) for r in RELATIONS]
    out += [Spec("color_attr", (Clause(a, 1, ca), Clause(b, 1, cb)))
            for a, b in permutations(SHAPES, 2) for ca in COLOURS for cb in COLOURS if ca != cb]
    return out


@lru_cache(maxsize=1)
def _by_caption() -> dict[str, Spec]:
    return {caption(s): s for s in all_specs()}


def parse(prompt: str) -> Spec:
    """The spec of a task prompt; SceneError (one line) for anything else."""
    spec = _by_caption().get(prompt.strip())
    if spec is None:
        raise SceneError(f"not a scenes prompt (GenEval's templates over shapes {', '.join(SHAPES)} and colours "
                         f"{', '.join(COLOURS)}): {prompt!r}")
    return spec


def skill_of(prompt: str) -> str:
    return parse(prompt).skill


# --- the held-out split -------------------------------------------------------------------------------------------

def make_split(seed: int = 0) -> dict:
    """The held-out atoms and prompt lists as made once (kept for the record; the committed file is what counts)."""
    rng = random.Random(seed)
    colour_shape = [["red", "triangle"], ["orange", "square"], ["yellow", "cross"], ["green", "star"],
                    ["blue", "circle"], ["purple", "square"]]  # one per colour, every shape at least once
    count_shape = [[3, "circle"], [4, "square"], [2, "triangle"], [3, "star"], [4, "cross"]]  # one count per shape
    two_object = [["circle", "cross"], ["square", "star"]]
    position = []
    for r in RELATIONS:  # four ordered pairs per relation
        position += [[a, r, b] for a, b in rng.sample(list(permutations(SHAPES, 2)), 4)]
    atoms = {"colour_shape": colour_shape, "count_shape": count_shape, "two_object": two_object, "position": position}
    held, train = [], []
    for s in all_specs():
        (held if _is_heldout(s, atoms) else train).append(caption(s))
    by_skill = lambda caps, k: [c for c in caps if skill_of(c) == k]  # noqa: E731
    heldout = []
    for k in SKILLS:  # every held-out prompt, but color_attr (a few hundred) is sampled to 16
        caps = by_skill(held, k)
        heldout += sorted(rng.sample(caps, 16)) if k == "color_attr" else caps
    rl_train, indist = [], []
    for k in SKILLS:  # at most 24 train prompts per skill, so no skill dominates a round's draw
        caps = by_skill(train, k)
        picked = sorted(rng.sample(caps, min(24, len(caps))))
        rl_train += picked
        indist += picked[:6]
    return {"atoms": atoms, "train": rl_train, "heldout": heldout, "indist": indist,
            "pretrain": train, "seed": seed}


def _is_heldout(spec: Spec, atoms: dict) -> bool:
    cs = {tuple(p) for p in atoms["colour_shape"]}
    if any((c.colour, c.shape) in cs for c in spec.clauses if c.colour):
        return True
    if spec.skill == "counting" and (spec.clauses[0].count, spec.clauses[0].shape) in {tuple(p) for p in atoms["count_shape"]}:
        return True
    if spec.skill == "two_object" and sorted(c.shape for c in spec.clauses) in [sorted(p) for p in atoms["two_object"]]:
        return True
    return spec.skill == "position" and [spec.clauses[0].shape, spec.relation, spec.clauses[1].shape] in atoms["position"]


@lru_cache(maxsize=1)
def split() -> dict:
    """The committed split (``assets/scenes_split.json``)."""
    try:
        data = json.loads(SPLIT_FILE.read_text())
    except (OSError, ValueError) as e:
        raise SceneError(f"{SPLIT_FILE} is missing or unreadable ({type(e).__name__}); it ships with the package") from None
    for k in SPLITS:
        if not data.get(k):
            raise SceneError(f"{SPLIT_FILE}: the {k!r} prompt list is empty")
    return data


def prompts(name: str) -> list[str]:
    """Committed prompts of a split: 'train' (RL), 'heldout' or 'indist' (evaluation)."""
    if name not in SPLITS:
        raise SceneError(f"scenes split must be one of {', '.join(SPLITS)}, got {name!r}")
    return list(split()[name])


def heldout_colour_shapes() -> set[tuple[str, str]]:
    return {tuple(p) for p in split()["atoms"]["colour_shape"]}


# --- geometry and rendering ---------------------------------------------------------------------------------------

def _star(n: int = 5, inner: float = 0.5) -> list[tuple[float, float]]:
    pts = [(np.sin(2 * np.pi * k / (2 * n)) * (1 if k % 2 == 0 else inner),
            -np.cos(2 * np.pi * k / (2 * n)) * (1 if k % 2 == 0 else inner)) for k in range(2 * n)]
    xs, ys = zip(*pts)
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]


_ARM = 0.36
POLYGONS = {
    "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "star": _star(),
    "cross": [(a, b) for a, b in [(0.5 - _ARM / 2, 0), (0.5 + _ARM / 2, 0), (0.5 + _ARM / 2, 0.5 - _ARM / 2),
                                  (1, 0.5 - _ARM / 2), (1, 0.5 + _ARM / 2), (0.5 + _ARM / 2, 0.5 + _ARM / 2),
                                  (0.5 + _ARM / 2, 1), (0.5 - _ARM / 2, 1), (0.5 - _ARM / 2, 0.5 + _ARM / 2),
                                  (0, 0.5 + _ARM / 2), (0, 0.5 - _ARM / 2), (0.5 - _ARM / 2, 0.5 - _ARM / 2)]],
}
"""Shapes other than circle and square as polygons in the unit box they exactly fill (upward triangle and star)."""
SS = 4
"""Supersampling factor of the renderer."""


def _draw(draw: ImageDraw.ImageDraw, shape: str, x0: float, y0: float, w: float, h: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
    elif shape == "square":
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
    else:
        draw.polygon([(x0 + u * w, y0 + v * h) for u, v in POLYGONS[shape]], fill=fill)


def render(objects: list[Obj], size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8: the objects on white, drawn at 4x and box-filtered."""
    big = Image.new("RGB", (size * SS, size * SS), BACKGROUND)
    draw = ImageDraw.Draw(big)
    for o in objects:
        s = o.size * SS
        _draw(draw, o.shape, o.cx * SS - s / 2, o.cy * SS - s / 2, s - 1, s - 1, COLOURS[o.colour])
    return np.asarray(big.resize((size, size), Image.Resampling.BOX))


@lru_cache(maxsize=4096)
def template(shape: str, w: int, h: int) -> np.ndarray:
    """(h, w) bool: the shape drawn to fill a w x h box, at least half of each pixel covered."""
    big = Image.new("L", (w * SS, h * SS), 0)
    _draw(ImageDraw.Draw(big), shape, 0, 0, w * SS - 1, h * SS - 1, 255)
    return np.asarray(big.resize((w, h), Image.Resampling.BOX)) >= 128


def box(o: Obj) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of an object's box."""
    return o.cx - o.size / 2, o.cy - o.size / 2, o.cx + o.size / 2, o.cy + o.size / 2


def relations(a: tuple, b: tuple, threshold: float = POSITION_THRESHOLD) -> set[str]:
    """GenEval's ``relative_position``: the relations of box a to box b ((x0, y0, x1, y1), y down)."""
    ca = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    cb = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    dim = np.array([a[2] - a[0] + b[2] - b[0], a[3] - a[1] + b[3] - b[1]])
    offset = ca - cb
    revised = np.maximum(np.abs(offset) - threshold * dim, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    return {r for r, ok in (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5), ("below", dy > 0.5)) if ok}


def jitter(size: int) -> int:
    return max(0, min(JITTER, int(SIZE / GRID - size) // 2 - 1))


def sample_scene(spec: Spec, rng: np.random.Generator, banned: set[tuple[str, str]] = frozenset()) -> list[Obj]:
    """Objects that satisfy the spec exactly: distinct cells, colours of unnamed objects drawn from those whose
    (colour, shape) is not in ``banned`` (pretraining bans the held-out pairs), the position relation by GenEval's rule."""
    wanted = [(c.shape, c.colour) for c in spec.clauses for _ in range(c.count)]
    cell = SIZE / GRID
    while True:  # rejection only for position scenes whose jitter blurs the relation (a few percent)
        cells = rng.choice(GRID * GRID, size=len(wanted), replace=False)
        objs = []
        for (shape, colour), k in zip(wanted, cells):
            if colour is None:
                ok = [c for c in COLOURS if (c, shape) not in banned]
                colour = ok[rng.integers(len(ok))]
            size = int(rng.integers(OBJECT_SIZE[0], OBJECT_SIZE[1] + 1))
            # the box's corner on a whole pixel: straight edges stay crisp, as the verifier's templates are drawn
            x0 = round((k % GRID + 0.5) * cell - size / 2) + int(rng.integers(-jitter(size), jitter(size) + 1))
            y0 = round((k // GRID + 0.5) * cell - size / 2) + int(rng.integers(-jitter(size), jitter(size) + 1))
            objs.append(Obj(shape, colour, x0 + size / 2, y0 + size / 2, size))
        if spec.relation is None or relations(box(objs[0]), box(objs[1])) == {spec.relation}:
            return objs


def scene_for(prompt: str, seed: int, pretraining: bool = False) -> tuple[np.ndarray, list[Obj]]:
    """A ground-truth render of a prompt, deterministic from (prompt, seed); ``pretraining`` bans held-out pairs."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise SceneError(f"a renderer seed must be an integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), *prompt.encode()])
    objs = sample_scene(parse(prompt), rng, heldout_colour_shapes() if pretraining else frozenset())
    return render(objs), objs


if __name__ == "__main__":  # writes the committed split once
    made = make_split()
    SPLIT_FILE.write_text(json.dumps(made, indent=1) + "\n")
    print({k: len(v) for k, v in made.items() if isinstance(v, list)})
