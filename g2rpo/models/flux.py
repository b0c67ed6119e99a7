"""diffusers' FluxTransformer2DModel (the FLUX.1-dev class) behind the policy interface."""
from __future__ import annotations

import torch

from ..policy import FlowPolicy
from ..schedules import TimestepConvention


def pack(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p), FLUX's patch packing (FluxPipeline._pack_latents for p = 2)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpack(x: torch.Tensor, c: int, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of ``pack``."""
    b = x.shape[0]
    x = x.view(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def image_ids(h: int, w: int, p: int) -> torch.Tensor:
    """(h/p * w/p, 3) position ids: (0, row, col), as FluxPipeline._prepare_latent_image_ids."""
    ids = torch.zeros(h // p, w // p, 3)
    ids[..., 1] = torch.arange(h // p)[:, None]
    ids[..., 2] = torch.arange(w // p)[None, :]
    return ids.reshape(-1, 3)


class FluxPolicy(FlowPolicy):
    """Velocity of a FluxTransformer2DModel on image-shaped latents.

    ``decoder`` maps clean latents to RGB in [0, 1]; None means the latents are pixels in [-1, 1].
    ``guidance`` is FLUX.1-dev's distilled guidance embedding (3.5 in the paper); None for models without it.
    """

    def __init__(
        self,
        transformer,
        latent_shape: tuple[int, int, int],
        patch: int = 2,
        guidance: float | None = None,
        timestep_convention: TimestepConvention | str = TimestepConvention.TRUNCATE_3,
        decoder=None,
    ) -> None:
        super().__init__()
        c, h, w = latent_shape
        if transformer.config.in_channels != c * patch * patch:
            raise ValueError(f"transformer in_channels {transformer.config.in_channels} != C*p*p = {c * patch * patch}")
        if h % patch or w % patch:
            raise ValueError(f"latent size {h}x{w} is not divisible by the patch {patch}")
        self.transformer = transformer
        self.latent_shape = tuple(latent_shape)
        self.patch = patch
        self.guidance = guidance if transformer.config.guidance_embeds else None
        self.timestep_convention = TimestepConvention(timestep_convention)
        self.decoder = decoder
        self.register_buffer("img_ids", image_ids(h, w, patch), persistent=False)

    def _velocity(self, x, t, cond):
        c, h, w = self.latent_shape
        dtype = self.transformer.dtype
        tokens = cond.tokens.to(dtype)
        guidance = None if self.guidance is None else torch.full_like(t, self.guidance).to(dtype)
        out = self.transformer(
            hidden_states=pack(x, self.patch).to(dtype),
            encoder_hidden_states=tokens,
            pooled_projections=cond.pooled.to(dtype),
            timestep=t.to(dtype),
            img_ids=self.img_ids.to(dtype),
            txt_ids=torch.zeros(tokens.shape[1], 3, device=x.device, dtype=dtype),
            guidance=guidance,
            return_dict=False,
        )[0]
        return unpack(out.float(), c, h, w, self.patch)

    def decode(self, x0):
        if self.decoder is not None:
            return self.decoder(x0)
        return ((x0.float() + 1) / 2).clamp(0, 1)


def tiny_flux_policy(
    seed: int = 0,
    image_size: int = 8,
    channels: int = 3,
    patch: int = 2,
    text_dim: int = 32,
    guidance: float | None = None,
    timestep_convention: TimestepConvention | str = TimestepConvention.TRUNCATE_3,
) -> FluxPolicy:
    """A tiny randomly initialised FLUX-class policy on pixels, for tests. Deterministic for a seed."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=channels * patch * patch,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        pooled_projection_dim=text_dim,
        guidance_embeds=guidance is not None,
        axes_dims_rope=(4, 4, 8),
    )
    # diffusers zero-initialises the output projection; perturb it so velocities depend on the inputs
    with torch.no_grad():
        for p in transformer.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return FluxPolicy(transformer, (channels, image_size, image_size), patch, guidance, timestep_convention)


def flux_forward_flops(config, img_tokens: int, txt_tokens: int) -> int:
    """Matrix-multiply FLOPs (2·m·n·k) of one FluxTransformer2DModel forward for one sample, from its config.

    Dual-stream blocks: per token q,k,v, out and a 4x MLP (24·D² per token, both streams) plus joint attention
    (QKᵀ and AV, 4·S²·D); single-stream blocks: the same 24·D² per token over the joined sequence; plus
    embeddings, the per-sample AdaLN modulations and the output projection. Norms, RoPE and activations are
    elementwise and left out, as in the usual MFU accounting.
    """
    c = config
    d = c.num_attention_heads * c.attention_head_dim
    s = img_tokens + txt_tokens
    embed = img_tokens * c.in_channels * d + txt_tokens * c.joint_attention_dim * d
    temb = (256 * d + d * d) + (c.pooled_projection_dim * d + d * d) + (256 * d + d * d) * bool(c.guidance_embeds)
    dual = 2 * d * 6 * d + 12 * s * d * d + 2 * s * s * d
    single = d * 3 * d + 12 * s * d * d + 2 * s * s * d
    out_channels = c.out_channels or c.in_channels
    out = d * 2 * d + img_tokens * d * c.patch_size**2 * out_channels
    return 2 * (embed + temb + c.num_layers * dual + c.num_single_layers * single + out)
