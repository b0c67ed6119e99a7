"""Look at the scenes task by hand: ``python -m benchmarks.scenes prompts|render|verify``.

``prompts --split heldout --skill counting`` lists a split's prompts; ``render "a photo of two stars" --seed 3 --out
x.png`` writes a ground-truth render; ``verify x.png --prompt "a photo of two stars"`` prints what the verifier reads
off any 48 px image (objects, atoms, strict pass, partial credit). Bad input is one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from g2rpo.pocket import scenes, verifier


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scenes", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/tasks.md")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts", help="list a split's prompts")
    p.add_argument("--split", default="heldout", help=f"one of {', '.join(scenes.SPLITS)}")
    p.add_argument("--skill", default="", help=f"only this skill: one of {', '.join(scenes.SKILLS)}")
    r = sub.add_parser("render", help="a ground-truth render of a prompt")
    r.add_argument("prompt")
    r.add_argument("--seed", default="0", help="renderer seed (an integer)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--scale", type=int, default=1, help="nearest-neighbour upscaling of the saved PNG")
    v = sub.add_parser("verify", help="what the verifier reads off an image")
    v.add_argument("image", type=Path)
    v.add_argument("--prompt", required=True)
    return ap.parse_args(argv)


def run(a) -> None:
    if a.cmd == "prompts":
        if a.skill and a.skill not in scenes.SKILLS:
            raise scenes.SceneError(f"unknown skill {a.skill!r}; choose from {', '.join(scenes.SKILLS)}")
        print("\n".join(p for p in scenes.prompts(a.split) if not a.skill or scenes.skill_of(p) == a.skill))
    elif a.cmd == "render":
        try:
            seed = int(a.seed)
        except ValueError:
            raise scenes.SceneError(f"--seed must be an integer, got {a.seed!r}") from None
        if a.scale < 1:
            raise scenes.SceneError(f"--scale must be >= 1, got {a.scale}")
        img, objs = scenes.scene_for(a.prompt, seed)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).resize((img.shape[1] * a.scale, img.shape[0] * a.scale), Image.Resampling.NEAREST).save(a.out)
        print(json.dumps([o.__dict__ for o in objs]))
    else:
        try:
            arr = np.asarray(Image.open(a.image).convert("RGB"))
        except OSError as e:
            raise scenes.SceneError(f"{a.image} is not a readable image ({type(e).__name__})") from None
        if arr.shape[:2] != (scenes.SIZE, scenes.SIZE):
            raise scenes.SceneError(f"{a.image} is {arr.shape[1]}x{arr.shape[0]}; the verifier reads "
                                    f"{scenes.SIZE}x{scenes.SIZE} images")
        spec = scenes.parse(a.prompt)
        d = verifier.detect(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255)
        at = verifier.atoms(spec, d)
        print(json.dumps({"skill": spec.skill, "objects": [o.__dict__ for o in d.objects],
                          "foreground": round(d.foreground, 4), "junk": round(d.junk, 4), "atoms": at,
                          "strict": all(x == 1.0 for x in at.values()), "partial": float(np.mean(list(at.values())))},
                         indent=1))


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        run(a)
    except scenes.SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
