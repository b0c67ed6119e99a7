"""The scenes verifier against the renderer's ground truth: ``python -m benchmarks.verifier_agreement [--n 600]``.

For n (prompt, seed) pairs, skills in turn, the ground-truth render and one wrong scene (an object recoloured, the
two of a position prompt swapped, one removed, one of an unnamed shape added, or one replaced by an unnamed shape;
built from the object list) are degraded (every object shifted by the same random sub-pixel offset, as a generator
does not place boxes on whole pixels; Gaussian pixel noise; Gaussian blur; JPEG) and verified. Reported per
skill and level: the share of correct scenes still passed (TPR) and of wrong scenes still rejected (TNR), and the
median time of one ``verify`` call. Deterministic from --seed.
"""
from __future__ import annotations

import argparse
import io
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from g2rpo.files import write_text
from g2rpo.pocket import scenes
from g2rpo.pocket.verifier import verify

LEVELS = ("clean", "subpixel", "noise 0.02", "noise 0.05", "noise 0.1", "blur 0.5", "blur 1.0", "jpeg 75")
KINDS = ("recolour", "move", "remove", "add", "reshape")


def degrade(img: np.ndarray, level: str, rng: np.random.Generator) -> torch.Tensor:
    """(3, H, W) float in [0, 1] of a uint8 render under one degradation level."""
    kind, _, arg = level.partition(" ")
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=int(arg))
        img = np.asarray(Image.open(buf).convert("RGB"))
    x = img.astype(np.float32).transpose(2, 0, 1) / 255
    if kind == "noise":
        x = x + float(arg) * rng.standard_normal(x.shape).astype(np.float32)
    elif kind == "blur":
        x = ndimage.gaussian_filter(x, sigma=(0, float(arg), float(arg)), mode="nearest")
    return torch.from_numpy(np.clip(x, 0, 1))


def wrong(spec: scenes.Spec, objs: list[scenes.Obj], rng: np.random.Generator) -> tuple[str, list[scenes.Obj]]:
    """(kind, objects) of a scene that breaks the prompt: one of the perturbations that applies to its skill."""
    kinds = ["remove", "add", "reshape"] + (["recolour"] if spec.skill in ("colors", "color_attr") else []) \
        + (["move"] if spec.skill == "position" else [])
    kind = kinds[rng.integers(len(kinds))]
    named = {c.shape for c in spec.clauses}
    free_shapes = [s for s in scenes.SHAPES if s not in named]
    objs = list(objs)
    i = int(rng.integers(len(objs)))
    if kind == "recolour":
        objs[i] = replace(objs[i], colour=str(rng.choice([c for c in scenes.COLOURS if c != objs[i].colour])))
    elif kind == "move":  # the two trade places: the relation reads reversed
        a, b = objs
        objs = [replace(a, shape=b.shape, colour=b.colour), replace(b, shape=a.shape, colour=a.colour)]
    elif kind == "remove":
        del objs[i]
    elif kind == "reshape":
        objs[i] = replace(objs[i], shape=str(rng.choice(free_shapes)))
    else:  # add: an unnamed shape centred on a free cell, box corner on a whole pixel as the renderer places them
        cell, c = scenes.SIZE / scenes.GRID, scenes.GRID
        used = {int(o.cx // cell) + c * int(o.cy // cell) for o in objs}
        k = int(rng.choice([k for k in range(c * c) if k not in used]))
        size = int(rng.integers(scenes.OBJECT_SIZE[0], scenes.OBJECT_SIZE[1] + 1))
        x0, y0 = round((k % c + 0.5) * cell - size / 2), round((k // c + 0.5) * cell - size / 2)
        objs.append(scenes.Obj(str(rng.choice(free_shapes)), str(rng.choice(list(scenes.COLOURS))),
                               x0 + size / 2, y0 + size / 2, size))
    return kind, objs


def measure(n: int, seed: int) -> tuple[dict, dict, list[float]]:
    """({(skill, level, 'tp'|'tn'): [bool]}, {(kind, level): [bool]}, verify times in s)."""
    rng = np.random.default_rng(seed)
    by_skill = {k: [scenes.caption(s) for s in scenes.all_specs() if s.skill == k] for k in scenes.SKILLS}
    hits, kinds, times = {}, {}, []
    for i in range(n):
        skill = scenes.SKILLS[i % len(scenes.SKILLS)]
        prompt = by_skill[skill][rng.integers(len(by_skill[skill]))]
        img, objs = scenes.scene_for(prompt, int(rng.integers(2 ** 31)))
        kind, bad = wrong(scenes.parse(prompt), objs, rng)
        bad_img = scenes.render(bad)
        for level in LEVELS:
            for truth, ob, im in ((True, objs, img), (False, bad, bad_img)):
                if level == "subpixel":
                    dx, dy = rng.random(2)
                    im = scenes.render([replace(o, cx=o.cx + dx, cy=o.cy + dy) for o in ob])
                x = degrade(im, level, rng)
                t0 = time.perf_counter()
                passed = verify(x, prompt)[0] == 1.0
                times.append(time.perf_counter() - t0)
                hits.setdefault((skill, level, "tp" if truth else "tn"), []).append(passed if truth else not passed)
                if not truth:
                    kinds.setdefault((kind, level), []).append(not passed)
    return hits, kinds, times


def pct(xs: list[bool]) -> str:
    return f"{100 * np.mean(xs):.0f}" if xs else "–"


def report(hits: dict, kinds: dict, times: list[float], n: int, command: str, seed: int) -> str:
    head = "| skill | " + " | ".join(LEVELS) + " |"
    rule = "|---|" + "---:|" * len(LEVELS)
    lines = ["# Scenes verifier: agreement with the renderer's ground truth", "", f"Made by `{command}` (seed {seed}, "
             f"{n} (prompt, seed) pairs, skills in turn). Each cell: TPR / TNR in % (correct scenes passed / wrong "
             "scenes rejected, strict).", "", head, rule]
    for skill in (*scenes.SKILLS, "all"):
        sk = scenes.SKILLS if skill == "all" else (skill,)
        cells = [f"{pct(sum((hits.get((s, lv, 'tp'), []) for s in sk), []))} / "
                 f"{pct(sum((hits.get((s, lv, 'tn'), []) for s in sk), []))}" for lv in LEVELS]
        lines.append(f"| {skill} | " + " | ".join(cells) + " |")
    lines += ["", "TNR in % by kind of wrong scene (how many in brackets):", "", head.replace("skill", "wrong scene"), rule]
    for k in KINDS:
        lines.append(f"| {k} ({len(kinds.get((k, 'clean'), []))}) | "
                     + " | ".join(pct(kinds.get((k, lv), [])) for lv in LEVELS) + " |")
    lines += ["", f"verify: median {1e3 * np.median(times):.2f} ms per image over {len(times)} calls (one CPU thread; "
              f"90th percentile {1e3 * np.percentile(times, 90):.2f} ms)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.verifier_agreement", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/tasks.md")
    ap.add_argument("--n", type=int, default=600, help="(prompt, seed) pairs, skills in turn")
    ap.add_argument("--out", type=Path, default=Path("results") / "scenes" / "verifier.md")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        if a.n < 1:
            raise ValueError(f"--n must be >= 1, got {a.n}")
        if a.out.is_dir() or a.out.parent.is_file():
            raise ValueError(f"--out {str(a.out)!r}: not a file path in a folder")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=a.out.parent):
            pass
    except (ValueError, OSError) as e:
        msg = e if isinstance(e, ValueError) else f"--out {str(a.out)!r} is not writable: {e.strerror or e}"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    command = "python -m benchmarks.verifier_agreement " + " ".join(
        shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    text = report(*measure(a.n, a.seed), a.n, command.strip(), a.seed)
    write_text(a.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
