"""FLUX.1-dev and SD3.5-medium loaded through diffusers as tiers: the paper tier at scale.

``flux_tier(folder_or_hub_id, ...)`` and ``sd35_tier(...)`` read a diffusers pipeline folder, the layout that
``FluxPipeline.save_pretrained`` writes and the hub repositories black-forest-labs/FLUX.1-dev and
stabilityai/stable-diffusion-3.5-medium have: model_index.json, transformer/, vae/, scheduler/, text_encoder/,
tokenizer/, text_encoder_2/, tokenizer_2/ (+ text_encoder_3/, tokenizer_3/ for SD3). A hub id instead of a folder
is downloaded (those subfolders only) when the network allows it.

- policy: the transformer behind ``FluxPolicy`` (2x2 packing, FLUX.1-dev's distilled guidance 3.5) or ``SD3Policy``
  (true CFG 4.5 against the empty prompt, as Flow-GRPO); the shared, frozen VAE decodes latents as the pipelines do.
- text: the pipeline's own ``encode_prompt``, cached on disk per prompt (``DiskCachedTextEncoder``). Call
  ``tier.text.precompute(tier.train_prompts + tier.eval_prompts + [""])`` once ("" is SD3's negative prompt): it
  drops the text encoders afterwards and training holds none (they load again only on a cache miss).
- rewards: the paper rewards (``g2rpo.rewards.registry``), each loaded on first use.
- prompts: text files, one prompt per line (HPDv2 is not bundled).

The tier loaders 'flux-dev' and 'sd35' (``g2rpo.tiers``) take their settings from the environment:

  G2RPO_FLUX_DIR, G2RPO_SD35_DIR   pipeline folder or hub id (default: the hub ids above)
  G2RPO_TRAIN_PROMPTS              training prompts, one per line (required)
  G2RPO_EVAL_PROMPTS               held-out prompts, one per line (required)
  G2RPO_REWARD_DIR                 one folder per reward repository, as ``RewardPaths.under`` (default: hub ids)
  G2RPO_RESOLUTION                 image side in pixels, divisible by 16 (default 720 FLUX as the paper, 512 SD3.5
                                   as Flow-GRPO)
  G2RPO_TEXT_CACHE                 text-embedding cache folder (default ``$XDG_CACHE_HOME/g2rpo/text-embeddings``,
                                   i.e. ~/.cache/...: a user folder, since a hub snapshot or a shared model folder may
                                   be read-only; entries are keyed by the text encoders' fingerprint, so one cache
                                   serves every model)

A missing setting, folder or file is a one-line ``TierError`` raised before anything heavy loads.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files import read_lines
from ..policy import Cond, TextEncoder
from ..rewards.registry import PAPER_REWARDS, RewardPaths, named, paper_rewards
from ..rewards.weights import is_hub_id
from ..textcache import DiskCachedTextEncoder
from ..tier import Tier
from .flux import FluxPolicy
from .sd3 import SD3Policy


class TierError(KeyError, ValueError):
    """A tier that cannot be built, in one line. A KeyError like an unknown tier's (``benchmarks.train`` reports those
    without a traceback) and a ValueError like any bad setting."""

    __str__ = Exception.__str__  # KeyError would print the message quoted


@dataclass(frozen=True)
class Kind:
    """What differs between the two model families."""

    name: str
    """Tier name."""
    hub_id: str
    env: str
    """Environment variable of the pipeline folder."""
    pipeline: str
    transformer: str
    text_parts: tuple[str, ...]
    """Subfolders of the text encoders and tokenizers."""
    max_sequence_length: int
    """T5 tokens."""
    resolution: int
    """Default image side in pixels."""

    @property
    def parts(self) -> tuple[str, ...]:
        return ("model_index.json", "transformer", "vae", "scheduler", *self.text_parts)


CLIP_T5 = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
FLUX = Kind("flux-dev", "black-forest-labs/FLUX.1-dev", "G2RPO_FLUX_DIR", "FluxPipeline", "FluxTransformer2DModel",
            CLIP_T5, 512, 720)
# SD3.5: Flow-GRPO encodes 128 T5 tokens (StableDiffusion3Pipeline's default is 256)
SD35 = Kind("sd35", "stabilityai/stable-diffusion-3.5-medium", "G2RPO_SD35_DIR", "StableDiffusion3Pipeline",
            "SD3Transformer2DModel", (*CLIP_T5, "text_encoder_3", "tokenizer_3"), 128, 512)


# ---- files ----
def resolve(spec: str | Path, kind: Kind) -> Path:
    """The local pipeline folder ``spec``, or the hub id ``spec`` downloaded (only the parts a tier uses: the hub
    repositories also hold single-file checkpoints of the same weights) when the network allows it."""
    path = Path(spec).expanduser()
    expected = f"a diffusers {kind.pipeline} folder with {', '.join(kind.parts)} (as {kind.hub_id}); set {kind.env}"
    if not path.exists() and is_hub_id(spec):
        try:
            import huggingface_hub as hub

            patterns = ["model_index.json", *(f"{p}/*" for p in kind.parts[1:])]
            path = Path(hub.snapshot_download(str(spec), allow_patterns=patterns))
        except Exception as e:  # offline, gated, unknown repository
            raise TierError(f"{spec!r} is not a local folder and the hub download failed ({type(e).__name__}); "
                            f"expected {expected}") from None
    if not path.is_dir():
        raise TierError(f"{path} is missing: expected {expected}")
    missing = [p for p in kind.parts if not (path / p).exists()]
    if missing:
        raise TierError(f"{path} lacks {', '.join(missing)}: expected {expected}")
    return path


def read_prompts(path: str | Path, what: str) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file."""
    try:
        lines = read_lines(path)
    except (OSError, UnicodeDecodeError) as e:
        raise TierError(f"{what} {path} is not a readable text file ({type(e).__name__}); expected one prompt "
                        f"per line") from None
    if not lines:
        raise TierError(f"{what} {path} holds no prompts; expected one prompt per line")
    return lines


def fingerprint(folder: Path, parts: tuple[str, ...]) -> str:
    """sha256 of the files under ``parts``: small files whole, weight files by size and their first and last MiB
    (reading 10 GB of T5 at every start would take minutes; retrained weights change those bytes too)."""
    h = hashlib.sha256()
    for f in sorted(p for part in parts for p in (folder / part).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        size = f.stat().st_size
        with open(f, "rb") as fh:
            if size <= 2 << 20:
                h.update(fh.read())
            else:
                h.update(str(size).encode() + fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


# ---- text ----
class PipelineText(TextEncoder):
    """Prompts -> Cond through the pipeline's own ``encode_prompt``, on a pipeline holding only the text encoders and
    tokenizers (transformer=None, vae=None). Loaded on the first ``encode``; ``unload`` drops it.

    FLUX: tokens = T5 states (B, max_sequence_length, 4096), pooled = CLIP-L pooled (B, 768).
    SD3: tokens = [CLIP-L ++ CLIP-G penultimate states, zero-padded to 4096; T5 states] (B, 77 + max_sequence_length,
    4096), pooled = [CLIP-L; CLIP-G] projections (B, 2048) -- the pipeline's prompt_embeds / pooled_prompt_embeds.
    """

    def __init__(self, kind: Kind, folder: Path, dtype: torch.dtype, device, max_sequence_length: int) -> None:
        super().__init__()
        self.kind, self.folder, self.dtype, self.device = kind, folder, dtype, torch.device(device)
        self.max_sequence_length = max_sequence_length
        self.pipe = None

    def load(self):
        if self.pipe is None:
            import diffusers

            cls = getattr(diffusers, self.kind.pipeline)
            self.pipe = cls.from_pretrained(self.folder, transformer=None, vae=None, dtype=self.dtype).to(self.device)
        return self.pipe

    def unload(self) -> None:
        self.pipe = None

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Cond:
        pipe, n = self.load(), self.max_sequence_length
        if self.kind is FLUX:
            tokens, pooled, _ = pipe.encode_prompt(prompts, device=self.device, max_sequence_length=n)
        else:
            tokens, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=self.device, max_sequence_length=n,
                                                      do_classifier_free_guidance=False)
        return Cond(tokens=tokens.cpu(), pooled=pooled.cpu())


class CachedPipelineText(DiskCachedTextEncoder):
    """``DiskCachedTextEncoder`` over ``PipelineText``: ``precompute`` fills the cache and then drops the text encoders
    (training holds none); a miss in ``encode`` loads them and keeps them for the next miss."""

    def precompute(self, prompts: list[str], unload: bool = True) -> int:
        try:
            return super().precompute(prompts)
        finally:
            if unload:
                self.encoder.unload()

    def encode(self, prompts: list[str]) -> Cond:
        if self.missing(prompts):
            self.precompute(prompts, unload=False)
        return super().encode(prompts)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "g2rpo" / "text-embeddings"


# ---- decoding and rewards ----
class VaeDecoder:
    """Clean latents -> RGB in [0, 1] as the pipelines decode: z / scaling_factor + shift_factor, ``vae.decode``,
    then [-1, 1] -> [0, 1]. A plain object, not a submodule, so the VAE stays out of the policy's parameters,
    optimizer and state dict; deep copies of the policy (Flow-GRPO's reference) share it."""

    def __init__(self, vae) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.scale = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent, as the pipelines compute it

    def __deepcopy__(self, memo):
        return self

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        z = x0.to(self.vae.device, self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        img = self.vae.decode(z, return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1).to(x0.device)


class LazyRewards(Mapping):
    """name -> paper reward, each model loaded on first use (and once for all PickScore scales): building a tier
    must not load 1B-parameter models it may never score with."""

    def __init__(self, names, paths: RewardPaths) -> None:
        unknown = [n for n in names if n not in PAPER_REWARDS]
        if unknown:
            raise TierError(f"unknown paper-tier rewards {unknown}; known: {', '.join(PAPER_REWARDS)}")
        self.names, self.paths, self.models, self.device = list(names), paths, {}, torch.device("cpu")

    def to(self, device) -> LazyRewards:
        """Run the reward networks on ``device`` (those loaded later are moved when they load)."""
        self.device = torch.device(device)
        for model in self.models.values():
            model.to(self.device)
        return self

    def __getitem__(self, name: str):
        if name not in self.names:
            raise KeyError(name)
        make = PAPER_REWARDS[name]
        if make not in self.models:
            self.models[make] = paper_rewards([name], self.paths)[name].to(self.device)
        return named(self.models[make], name)

    def __contains__(self, name) -> bool:  # Mapping's would load the model
        return name in self.names

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


# ---- tiers ----
def _tier(kind: Kind, folder_or_hub_id, train_prompts, eval_prompts, reward_dir=None, resolution: int | None = None,
          cache_dir=None, reward_names=None, dtype=torch.float32, text_dtype=torch.bfloat16, vae_dtype=torch.float32,
          device="cpu", max_sequence_length: int | None = None) -> Tier:
    import diffusers

    resolution = resolution or kind.resolution
    if resolution <= 0 or resolution % 16:
        raise TierError(f"resolution {resolution} must be a positive multiple of 16 (VAE x8, then 2x2 patches)")
    train, heldout = read_prompts(train_prompts, "training prompts"), read_prompts(eval_prompts, "held-out prompts")
    if reward_dir is not None and not Path(reward_dir).expanduser().is_dir():
        raise TierError(f"reward folder {reward_dir} is missing: expected one folder per reward repository "
                        f"(RewardPaths.under)")
    paths = RewardPaths.under(reward_dir) if reward_dir is not None else RewardPaths()
    rewards = LazyRewards(reward_names or list(PAPER_REWARDS), paths)
    folder = resolve(folder_or_hub_id, kind)

    decoder = VaeDecoder(diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae", dtype=vae_dtype))
    latent = (decoder.vae.config.latent_channels, resolution // decoder.scale, resolution // decoder.scale)
    n = max_sequence_length or kind.max_sequence_length
    identity = f"{kind.pipeline} text {fingerprint(folder, kind.text_parts)} max_sequence_length={n} {text_dtype}"
    text = CachedPipelineText(PipelineText(kind, folder, text_dtype, device, n),
                              Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), identity)
    transformer_cls = getattr(diffusers, kind.transformer)

    # make_policy reloads the transformer from disk each call instead of deep-copying one kept loaded: a resident
    # template would double the memory of a 12B model for a copy needed once per run; the OS page cache makes a
    # second load cheap. The VAE is loaded once above and shared (frozen) by every policy.
    def make_policy():
        tr = transformer_cls.from_pretrained(folder, subfolder="transformer", dtype=dtype).requires_grad_(True)
        if kind is FLUX:
            return FluxPolicy(tr, latent, patch=2, guidance=3.5, decoder=decoder)
        return SD3Policy(tr, latent, negative=text([""]), guidance_scale=4.5, decoder=decoder)  # "" from the cache

    digest = lambda prompts: hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]  # noqa: E731
    settings = {"resolution": str(resolution), "max_sequence_length": str(n), "train_prompts": digest(train),
                "eval_prompts": digest(heldout)}
    return Tier(kind.name, make_policy, text, rewards, train, heldout, settings)


def flux_tier(folder_or_hub_id: str | Path, train_prompts: str | Path, eval_prompts: str | Path, **kw) -> Tier:
    """FLUX.1-dev as a tier: 720 px (latents 16 x 90 x 90), guidance embedding 3.5, T5 max_sequence_length 512.

    Keywords: reward_dir, resolution, cache_dir, reward_names (default: every paper reward), dtype (transformer,
    fp32 master weights), text_dtype (bf16, as the official preprocessing), vae_dtype, device (text encoding),
    max_sequence_length."""
    return _tier(FLUX, folder_or_hub_id, train_prompts, eval_prompts, **kw)


def sd35_tier(folder_or_hub_id: str | Path, train_prompts: str | Path, eval_prompts: str | Path, **kw) -> Tier:
    """SD3.5-medium as a tier, Flow-GRPO's setting: 512 px, true CFG 4.5 against the empty prompt, T5 128 tokens.
    Keywords as ``flux_tier``."""
    return _tier(SD35, folder_or_hub_id, train_prompts, eval_prompts, **kw)


def tier_from_env(kind: Kind) -> Tier:
    """The tier configured by the environment variables of the module docstring."""
    env = os.environ
    missing = [v for v in ("G2RPO_TRAIN_PROMPTS", "G2RPO_EVAL_PROMPTS") if not env.get(v)]
    if missing:
        raise TierError(f"model tier {kind.name!r} needs {' and '.join(missing)} (text files, one prompt per line; "
                        f"HPDv2 is not bundled)")
    try:
        resolution = int(env.get("G2RPO_RESOLUTION") or kind.resolution)
    except ValueError:
        raise TierError(f"G2RPO_RESOLUTION={env['G2RPO_RESOLUTION']!r} is not an integer") from None
    build = flux_tier if kind is FLUX else sd35_tier
    return build(env.get(kind.env) or kind.hub_id, env["G2RPO_TRAIN_PROMPTS"], env["G2RPO_EVAL_PROMPTS"],
                 reward_dir=env.get("G2RPO_REWARD_DIR") or None, resolution=resolution,
                 cache_dir=env.get("G2RPO_TEXT_CACHE") or None)
