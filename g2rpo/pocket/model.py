"""The pocket generator: a small FluxTransformer2DModel on 32x32 RGB pixels, conditioned on MiniLM."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_strict, read_state
from ..models.flux import FluxPolicy
from ..policy import Cond, FlowPolicy
from .data import ASSETS
from .text import MiniLMEncoder

WEIGHTS = ASSETS / "pocket_generator.safetensors"
CONFIG = ASSETS / "pocket_generator.json"
SCENES_WEIGHTS = ASSETS / "pocket_scenes_generator.safetensors"
SCENES_CONFIG = ASSETS / "pocket_scenes_generator.json"
"""The scenes generator (``python -m benchmarks.assets.pretrain --task scenes``): the same class at 48 px."""


@dataclass
class GeneratorConfig:
    """Architecture of the pocket generator (FLUX.1-dev's transformer class, scaled down)."""

    image_size: int = 32
    """Side of the square RGB image the model works on (pixels are the latents, in [-1, 1])."""
    patch: int = 4
    """Pixel patch per token: 32/4 -> 8x8 = 64 image tokens."""
    num_layers: int = 2
    """Double-stream (MMDiT) blocks."""
    num_single_layers: int = 4
    """Single-stream blocks."""
    attention_head_dim: int = 32
    """Width of one head; the rope axes below must sum to it."""
    num_attention_heads: int = 4
    """Heads; hidden size = heads * head_dim."""
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)
    """RoPE dims for (text index, row, col)."""
    text_dim: int = 384
    """MiniLM hidden size, for both token states and the pooled embedding."""

    def build(self):
        """A randomly initialised transformer of this shape."""
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=3 * self.patch**2,
            num_layers=self.num_layers,
            num_single_layers=self.num_single_layers,
            attention_head_dim=self.attention_head_dim,
            num_attention_heads=self.num_attention_heads,
            joint_attention_dim=self.text_dim,
            pooled_projection_dim=self.text_dim,
            guidance_embeds=False,
            axes_dims_rope=tuple(self.axes_dims_rope),
        )

    def policy(self, transformer) -> FluxPolicy:
        s = self.image_size
        return FluxPolicy(transformer, latent_shape=(3, s, s), patch=self.patch, guidance=None)


def load_generator(weights: Path = WEIGHTS, config: Path = CONFIG) -> FluxPolicy:
    """The committed generator as a FluxPolicy in eval mode, weights loaded strictly.

    Raises CheckpointError (one line: the file, what is wrong, where it comes from) for a missing, truncated or
    corrupt file and for weights of another architecture."""
    origin = "it ships with this package (reinstall, or rerun python -m benchmarks.assets.pretrain)"
    try:
        cfg = GeneratorConfig(**json.loads(Path(config).read_text())["architecture"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{config} is missing or unreadable ({type(e).__name__}); {origin}") from None
    transformer = cfg.build()
    load_strict(transformer, read_state(weights, origin), weights, origin)
    return cfg.policy(transformer.eval().requires_grad_(False))


SCENES_ARCH = {"image_size": 48, "patch": 6}
"""The scenes generator's architecture where it differs from the emoji one: 48 px in 6 px patches, still 64 tokens
(so a round costs what a 32 px emoji round does), every other size the same (2.40M parameters)."""


def load_pocket(max_tokens: int = 16):
    """(policy, text_encoder): the pocket generator and its frozen MiniLM text encoder."""
    return load_generator(), MiniLMEncoder(max_tokens=max_tokens)


@torch.no_grad()
def euler_sample(policy: FlowPolicy, cond: Cond, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Plain Euler ODE from noise over ``sigmas`` (1 -> 0); returns clean latents. Kept here so the
    pocket tier's cards and grid do not depend on the core sampler."""
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (s_next - s) * policy(x, s, cond)
    return x


def arch_dict(cfg: GeneratorConfig) -> dict:
    d = asdict(cfg)
    d["axes_dims_rope"] = list(d["axes_dims_rope"])
    return d
