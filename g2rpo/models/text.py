"""A deterministic hashed text encoder, for tests and tiny models (no weights, no network)."""
from __future__ import annotations

import hashlib

import torch

from ..policy import Cond, TextEncoder


class HashTextEncoder(TextEncoder):
    """Each word maps to a fixed random vector seeded by its hash; pooled = mean of the words."""

    def __init__(self, dim: int = 32, max_tokens: int = 8) -> None:
        super().__init__()
        self.dim, self.max_tokens = dim, max_tokens

    def _word(self, w: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, prompts: list[str]) -> Cond:
        tokens = torch.zeros(len(prompts), self.max_tokens, self.dim)
        for i, p in enumerate(prompts):
            words = p.lower().split()[: self.max_tokens] or [""]
            tokens[i, : len(words)] = torch.stack([self._word(w) for w in words])
        pooled = tokens.sum(1) / tokens.abs().sum(-1).gt(0).sum(1, keepdim=True).clamp(min=1)
        return Cond(tokens=tokens, pooled=pooled)
