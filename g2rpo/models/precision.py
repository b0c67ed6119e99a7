"""Precision and memory switches for the paper tier: gradient checkpointing and bf16 autocast.

Master weights stay fp32 (as the official DanceGRPO/Flow-GRPO FLUX runs keep them: "keep the master weight to
float32" with bf16 mixed precision); ``autocast`` runs the matrix multiplies of the forwards inside it in bf16.
``FlowPolicy.forward`` returns fp32 whatever the model computed in, and the SDE step and log-probs are computed
outside the model, in fp32 (algorithms.md §2).
"""
from __future__ import annotations

from ..policy import FlowPolicy, autocast  # noqa: F401  (autocast: re-exported, it lives beside forward)


def _transformer(policy: FlowPolicy):
    tr = getattr(policy, "transformer", None)
    if tr is None or not hasattr(tr, "enable_gradient_checkpointing"):
        raise TypeError(f"{type(policy).__name__} has no diffusers transformer (policy.transformer)")
    return tr


def enable_memory_savers(policy: FlowPolicy, gradient_checkpointing: bool) -> FlowPolicy:
    """Turn diffusers' gradient checkpointing of the transformer blocks on or off; returns the policy.

    Checkpointing only acts on forwards with grad (the training forwards): each block's activations are recomputed
    in the backward pass instead of being kept, so the gradients are the same and memory drops to about one block's
    activations per sample, for roughly one extra forward of compute.
    """
    tr = _transformer(policy)
    if gradient_checkpointing:
        tr.enable_gradient_checkpointing()
    else:
        tr.disable_gradient_checkpointing()
    return policy
