"""Deterministic generation and scoring: what the benchmark runner and ``eval.evaluate`` share.

Every prompt of an evaluation set gets its own fixed initial noise (from its index and the
evaluation seed, not from the model or the step count), so the base model and every trained
model are compared on the same x_T, prompt by prompt.
"""
from __future__ import annotations

import torch
from PIL import Image

from g2rpo.files import atomic
from g2rpo.loop import generator
from g2rpo.policy import FlowPolicy, TextEncoder
from g2rpo.rewards import Reward
from g2rpo.sampling import ode_sample

from g2rpo.image_stats import image_stats


def image_generator(seed: int, prompt_index: int, image_index: int = 0) -> torch.Generator:
    """The noise stream of image ``image_index`` of prompt ``prompt_index`` (image 0: the benchmark's evaluation)."""
    return generator(seed, "eval", prompt_index) if image_index == 0 else generator(seed, "eval", prompt_index, image_index)


def eval_noise(n: int, latent_shape, seed: int = 0, image_index: int = 0) -> torch.Tensor:
    """(n, C, H, W): the initial noise of image ``image_index`` of prompts 0..n-1 of an evaluation set."""
    return torch.stack([torch.randn(tuple(latent_shape), generator=image_generator(seed, i, image_index)) for i in range(n)])


@torch.no_grad()
def generate(policy: FlowPolicy, text: TextEncoder, prompts: list[str], sigmas: torch.Tensor, seed: int = 0,
             batch: int = 64, image_index: int = 0) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] from the deterministic ODE sampler over ``sigmas``."""
    noise = eval_noise(len(prompts), policy.latent_shape, seed, image_index)
    out = []
    for i in range(0, len(prompts), batch):
        cond = text(prompts[i : i + batch])
        x0, _, _ = ode_sample(policy, noise[i : i + batch], sigmas, cond)
        out.append(policy.decode(x0))
    return torch.cat(out)


def save_png(image: torch.Tensor, path) -> None:
    """One (3, H, W) image in [0, 1] as an 8-bit PNG (atomically: a rescore never reads half an image)."""
    with atomic(path) as tmp:
        Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(tmp, format="PNG")


@torch.no_grad()
def score(images: torch.Tensor, prompts: list[str], rewards: dict[str, Reward], batch: int = 64) -> dict[str, torch.Tensor]:
    """Per-image scores of every reward and every image statistic; FloatingPointError for images with non-finite
    pixels, which no reward or statistic can score."""
    bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
    if bad:  # a diverged model, or a kernel compiled for another CPU (see docs/reliability.md)
        raise FloatingPointError(f"{bad} of {len(images)} images to score have non-finite pixels")
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(prompts), batch):
        imgs, ps = images[i : i + batch], prompts[i : i + batch]
        for name, r in rewards.items():
            out.setdefault(name, []).append(r(imgs, ps))
        for name, v in image_stats(imgs).items():
            out.setdefault(f"stat/{name}", []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def derangement(n: int) -> list[int]:
    """A fixed permutation of range(n) that moves every index (seeded, the same in every run)."""
    if n < 2:
        return list(range(n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    return [perm[(perm.index(i) + 1) % n] for i in range(n)]  # each index -> the next in a random cycle


def prompt_scores(policy: FlowPolicy, text: TextEncoder, prompts: list[str], sigmas: torch.Tensor,
                  rewards: dict[str, Reward], seed: int = 0, images_per_prompt: int = 1, stats: bool = True,
                  gap: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-prompt scores, each the mean over the prompt's images 0..k-1 (fixed noise), and the images of image 0.
    Averaging a few images per prompt before any comparison shrinks the evaluation noise of small prompt sets.
    For each reward named in ``gap`` also ``gap/<name>``: the score with the image's own prompt minus the score with
    another prompt of the set (a fixed derangement), the share of the score that is about the prompt."""
    total: dict[str, torch.Tensor] = {}
    first = None
    other = [prompts[i] for i in derangement(len(prompts))]
    for j in range(images_per_prompt):
        images = generate(policy, text, prompts, sigmas, seed=seed, image_index=j)
        first = images if first is None else first
        s = {k: v for k, v in score(images, prompts, rewards).items() if stats or not k.startswith("stat/")}
        s |= {f"gap/{k}": s[k] - rewards[k](images, other) for k in gap}
        for k, v in s.items():
            total[k] = total.get(k, 0) + v / images_per_prompt
    return total, first
