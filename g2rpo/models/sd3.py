"""diffusers' SD3Transformer2DModel (the SD3.5-medium class) behind the policy interface, with true CFG."""
from __future__ import annotations

import torch

from ..policy import Cond, FlowPolicy
from ..schedules import TimestepConvention


class SD3Policy(FlowPolicy):
    """Velocity of an SD3Transformer2DModel on image-shaped latents, with true classifier-free guidance.

    v = v_uncond + w * (v_cond - v_uncond), both halves from ONE transformer call on the doubled batch
    [uncond; cond], as StableDiffusion3Pipeline and Flow-GRPO's SD3.5 rollout and training do. The
    unconditional conditioning is the empty prompt's embeddings, ``negative`` (a Cond of batch 1), expanded
    to the batch. ``guidance_scale`` w: Flow-GRPO's SD3.5 default 4.5; 1.0 means no CFG and a plain call.
    In training, as Flow-GRPO's ``compute_log_prob``, v_uncond is detached: the gradient reaches the weights
    through the conditional half only, w * dv_cond (the value is unchanged; rollouts carry no gradient anyway).

    Cost: ``forward`` counts rows of the policy (one row = one velocity). Under CFG one counted row costs
    ``rows_per_call`` = 2 transformer rows (forward, and backward when trained); without CFG 1.

    ``decoder`` maps clean latents to RGB in [0, 1]; None means the latents are pixels in [-1, 1].
    """

    def __init__(
        self,
        transformer,
        latent_shape: tuple[int, int, int],
        negative: Cond,
        guidance_scale: float = 4.5,
        timestep_convention: TimestepConvention | str = TimestepConvention.FLOAT,
        decoder=None,
    ) -> None:
        super().__init__()
        c, h, w = latent_shape
        cfg = transformer.config
        if cfg.in_channels != c or (cfg.out_channels or cfg.in_channels) != c:
            raise ValueError(f"transformer in/out channels {cfg.in_channels}/{cfg.out_channels} != latent channels {c}")
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"latent size {h}x{w} is not divisible by the patch {cfg.patch_size}")
        if len(negative) != 1:
            raise ValueError(f"the negative (empty-prompt) Cond must have batch 1, got {len(negative)}")
        if guidance_scale < 1:  # diffusers only guides for w > 1 and would silently ignore a w < 1
            raise ValueError(f"guidance_scale must be >= 1 (1 = no CFG), got {guidance_scale}")
        self.transformer = transformer
        self.latent_shape = tuple(latent_shape)
        self.guidance_scale = float(guidance_scale)
        # Flow-GRPO (SD3.5) feeds the scheduler's timestep sigma*1000 as a float: FLOAT, then x1000 in _velocity
        self.timestep_convention = TimestepConvention(timestep_convention)
        self.decoder = decoder
        # given, not trained: kept out of the state dict (checkpoints hold the transformer); export saves it
        self.register_buffer("neg_tokens", negative.tokens.detach().clone(), persistent=False)
        self.register_buffer("neg_pooled", negative.pooled.detach().clone(), persistent=False)

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1  # StableDiffusion3Pipeline.do_classifier_free_guidance

    @property
    def rows_per_call(self) -> int:
        """Transformer rows per counted policy row: 2 under CFG ([uncond; cond]), else 1."""
        return 2 if self.do_cfg else 1

    @property
    def negative(self) -> Cond:
        return Cond(tokens=self.neg_tokens, pooled=self.neg_pooled)

    def _velocity(self, x, t, cond):
        dtype, b = self.transformer.dtype, x.shape[0]
        tokens, pooled = cond.tokens, cond.pooled
        if self.do_cfg:  # order [uncond; cond], as the pipeline's torch.cat([negative, positive])
            if tokens.shape[1] != self.neg_tokens.shape[1]:
                raise ValueError(f"prompt has {tokens.shape[1]} tokens, the negative prompt {self.neg_tokens.shape[1]}")
            tokens = torch.cat([self.neg_tokens.expand(b, -1, -1), tokens])
            pooled = torch.cat([self.neg_pooled.expand(b, -1), pooled])
            x, t = torch.cat([x, x]), torch.cat([t, t])
        out = self.transformer(
            hidden_states=x.to(dtype),
            encoder_hidden_states=tokens.to(dtype),
            pooled_projections=pooled.to(dtype),
            timestep=(t * 1000).to(dtype),  # SD3 takes timestep in [0, 1000] (scheduler.timesteps = sigma * 1000)
            return_dict=False,
        )[0].float()
        if not self.do_cfg:
            return out
        v_uncond, v_cond = out.chunk(2)
        v_uncond = v_uncond.detach()  # Flow-GRPO trains through the conditional half only (a no-op without grad)
        return v_uncond + self.guidance_scale * (v_cond - v_uncond)

    def decode(self, x0):
        if self.decoder is not None:
            return self.decoder(x0)
        return ((x0.float() + 1) / 2).clamp(0, 1)


def tiny_sd3_config(image_size: int = 8, channels: int = 3, patch: int = 2, text_dim: int = 32) -> dict:
    """A tiny SD3.5-style config: 2 joint blocks (the first with SD3.5's dual attention), RMS qk-norm."""
    return dict(
        sample_size=image_size,
        patch_size=patch,
        in_channels=channels,
        out_channels=channels,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        caption_projection_dim=32,  # must equal heads * head_dim (the context stream's width)
        pooled_projection_dim=text_dim,
        pos_embed_max_size=max(16, image_size // patch),
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )


def tiny_sd3_policy(
    seed: int = 0,
    image_size: int = 8,
    channels: int = 3,
    patch: int = 2,
    text_dim: int = 32,
    text_tokens: int = 8,
    guidance_scale: float = 4.5,
    timestep_convention: TimestepConvention | str = TimestepConvention.FLOAT,
) -> SD3Policy:
    """A tiny randomly initialised SD3-class policy on pixels with a random negative Cond, for tests.

    Deterministic for a seed. ``text_dim``/``text_tokens`` match HashTextEncoder's defaults (32, 8).
    """
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(**tiny_sd3_config(image_size, channels, patch, text_dim))
    # perturb zero-initialised weights (as tiny_flux_policy) so velocities depend on every input
    with torch.no_grad():
        for p in transformer.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    negative = Cond(tokens=torch.randn(1, text_tokens, text_dim), pooled=torch.randn(1, text_dim))
    return SD3Policy(transformer, (channels, image_size, image_size), negative, guidance_scale, timestep_convention)
