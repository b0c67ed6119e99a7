"""Text embeddings computed once per prompt set and read from disk afterwards.

The official FLUX recipes (DanceGRPO's ``fastvideo/data_preprocess/preprocess_flux_embedding.py``) encode every
training prompt once before training and keep no text encoder in the training processes. ``DiskCachedTextEncoder``
does the same lazily: it wraps a ``TextEncoder``, serves prompts from safetensors files and encodes only the ones it
has not seen, appending them.

Layout: ``folder/<prompt_set>.<sha256(identity)[:16]>/<shard>.safetensors``. A shard holds, for N prompts, ``key``
(N, 32) uint8 = sha256(identity, prompt), ``digest`` (N, 32) uint8 = sha256 of the key and the row's bytes, and
one (N, ...) tensor per ``Cond`` field in the encoder's dtype; its metadata records the identity and a checksum
of the key and digest tensors. Shards are immutable, named by the hash of their keys and written atomically, so
appending never rewrites earlier embeddings and concurrent writers never clobber each other. Rows are read lazily
(memory-mapped) and checked against their digest, so at paper scale (T5-XXL states are 4 MiB per prompt in bf16)
neither the whole set nor a whole file is ever in memory.

A file that cannot be read or fails a check raises ``CheckpointError`` naming it; it is never recomputed over
silently (delete it to recompute). Changing ``identity`` (encoder weights, max tokens, dtype...) changes every key,
so stale embeddings are never served.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpoint import CheckpointError
from .errors import one_line
from .files import atomic, remove_stale
from .policy import Cond, TextEncoder

_FIELDS = [f.name for f in fields(Cond)]


def prompt_key(identity: str, prompt: str) -> bytes:
    """sha256 of (identity, prompt): the cache key of a prompt's embedding."""
    return hashlib.sha256(identity.encode() + b"\0" + prompt.encode()).digest()


def _row_digest(key: bytes, tensors: list[torch.Tensor]) -> bytes:
    h = hashlib.sha256(key)
    for t in tensors:
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


def _index_digest(keys: torch.Tensor, digests: torch.Tensor) -> str:
    """Checksum of a shard's key and digest tensors (checked when the shard is indexed: a damaged key would
    otherwise look like a miss and be recomputed)."""
    return hashlib.sha256(keys.contiguous().numpy().tobytes() + digests.contiguous().numpy().tobytes()).hexdigest()


class DiskCachedTextEncoder(TextEncoder):
    """A ``TextEncoder`` whose embeddings live in safetensors shards under ``folder``, per (identity, prompt set).

    ``identity`` must name everything that determines the embeddings (model and weights hash, max tokens, dtype).
    ``prompt_set`` names the file group (e.g. "hpdv2-train"); lookups only see that group. ``batch_size`` is the
    wrapped encoder's batch; ``shard_size`` the prompts per shard written by ``precompute``.
    Unlike the base class, nothing is kept in memory but the key index: the files are the cache.
    """

    def __init__(self, encoder: TextEncoder, folder: Path, identity: str, prompt_set: str = "prompts",
                 batch_size: int = 64, shard_size: int = 1024) -> None:
        super().__init__()
        if not identity:
            raise ValueError("identity must name the encoder (model, weights, max tokens, dtype)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prompt_set):
            raise ValueError(f"prompt_set must be a plain file name part, got {prompt_set!r}")
        self.encoder, self.identity, self.prompt_set = encoder, identity, prompt_set
        self.batch_size, self.shard_size = batch_size, shard_size
        self.folder = Path(folder) / f"{prompt_set}.{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
        self._index: dict[bytes, tuple[Path, int]] = {}
        self._scanned: set[Path] = set()
        self.computed = 0
        """Prompts this instance had the wrapped encoder compute."""
        self._scan()

    # ---- the files ----
    def _error(self, path: Path, what: str) -> CheckpointError:
        return CheckpointError(f"{path} {what}; text-embedding cache of prompt set {self.prompt_set!r} for encoder "
                               f"{self.identity!r} (delete the file to recompute it)")

    def _scan(self) -> None:
        """Index the shards not indexed yet (another process may have added some)."""
        if not self.folder.is_dir():
            return
        remove_stale(self.folder)
        for path in sorted(self.folder.glob("*.safetensors")):
            if path in self._scanned:
                continue
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                    names = set(f.keys())
                    keys = f.get_tensor("key") if "key" in names else None
                    digests = f.get_tensor("digest") if "digest" in names else None
                    rows = {n: f.get_slice(n).get_shape()[0] for n in names}
            except Exception as e:  # truncated, or not a safetensors file
                raise self._error(path, f"is unreadable ({one_line(e)})") from None
            need = {"key", "digest", *_FIELDS}
            if not need <= names:
                raise self._error(path, f"lacks tensors {sorted(need - names)}")
            if meta.get("identity") != self.identity:
                raise self._error(path, f"was written for encoder {meta.get('identity')!r}")
            n = rows["key"]
            if any(t.dtype != torch.uint8 or tuple(t.shape) != (n, 32) for t in (keys, digests)) or \
                    any(rows[k] != n for k in need):
                raise self._error(path, "has inconsistent key/embedding rows")
            if meta.get("index_sha256") != _index_digest(keys, digests):
                raise self._error(path, "is corrupt (its key index does not match its checksum)")
            flat = keys.contiguous().numpy().tobytes()
            for i in range(n):
                self._index.setdefault(flat[32 * i:32 * (i + 1)], (path, i))
            self._scanned.add(path)

    def _write(self, prompts: list[str], cond: Cond) -> None:
        keys = [prompt_key(self.identity, p) for p in prompts]
        tensors = {f: getattr(cond, f).detach().cpu().contiguous() for f in _FIELDS}
        digests = [_row_digest(keys[i], [tensors[f][i] for f in _FIELDS]) for i in range(len(prompts))]
        state = {"key": torch.tensor([list(k) for k in keys], dtype=torch.uint8),
                 "digest": torch.tensor([list(d) for d in digests], dtype=torch.uint8), **tensors}
        index = _index_digest(state["key"], state["digest"])
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{hashlib.sha256(b''.join(keys)).hexdigest()[:24]}.safetensors"
        with atomic(path) as tmp:
            save_file(state, str(tmp), metadata={"identity": self.identity, "prompt_set": self.prompt_set,
                                                 "format": "g2rpo-text-cache", "index_sha256": index})
        self._scanned.discard(path)
        self._scan()

    def _read(self, keys: list[bytes]) -> Cond:
        by_shard: dict[Path, list[tuple[int, int, bytes]]] = {}
        for j, k in enumerate(keys):
            path, row = self._index[k]
            by_shard.setdefault(path, []).append((j, row, k))
        out: list[list[torch.Tensor] | None] = [None] * len(keys)
        for path, items in by_shard.items():
            try:
                with safe_open(str(path), framework="pt") as f:
                    slices = {n: f.get_slice(n) for n in ("digest", *_FIELDS)}
                    for j, row, key in items:
                        parts = [slices[n][row:row + 1] for n in _FIELDS]
                        stored = bytes(slices["digest"][row:row + 1][0].tolist())
                        if _row_digest(key, [p[0] for p in parts]) != stored:
                            raise ValueError(f"row {row} does not match its digest")
                        out[j] = parts
            except CheckpointError:
                raise
            except Exception as e:
                raise self._error(path, f"is corrupt ({one_line(e)})") from None
        return Cond(**{n: torch.cat([o[i] for o in out]) for i, n in enumerate(_FIELDS)})

    # ---- the encoder ----
    def _compute(self, prompts: list[str], shard_size: int) -> None:
        pending: list[str] = []
        parts: list[Cond] = []
        for i in range(0, len(prompts), self.batch_size):
            batch = prompts[i:i + self.batch_size]
            parts.append(self.encoder.encode(batch))
            pending += batch
            self.computed += len(batch)
            if len(pending) >= shard_size or i + self.batch_size >= len(prompts):
                self._write(pending, Cond(**{n: torch.cat([getattr(c, n) for c in parts]) for n in _FIELDS}))
                pending, parts = [], []

    def missing(self, prompts: list[str]) -> list[str]:
        """The distinct prompts not in the cache, in order."""
        return [p for p in dict.fromkeys(prompts) if prompt_key(self.identity, p) not in self._index]

    def precompute(self, prompts: list[str]) -> int:
        """Encode every prompt not cached yet, ``batch_size`` at a time, into shards of ``shard_size``; returns how
        many were computed (the official preprocessing step)."""
        todo = self.missing(prompts)
        if todo:
            self._scan()
            todo = self.missing(todo)
        self._compute(todo, self.shard_size)
        return len(todo)

    def encode(self, prompts: list[str]) -> Cond:
        """Cached rows for ``prompts`` (in order, duplicates allowed); missing ones are computed and appended first."""
        if self.missing(prompts):
            self.precompute(prompts)
        return self._read([prompt_key(self.identity, p) for p in prompts])

    def __call__(self, prompts: list[str]) -> Cond:
        return self.encode(list(prompts))

    def __len__(self) -> int:
        return len(self._index)
