"""The on-disk text-embedding cache: exact embeddings, no recomputation, identity-keyed, loud on corruption."""
import json
import os

import pytest
import torch

from g2rpo.checkpoint import CheckpointError
from g2rpo.models.text import HashTextEncoder
from g2rpo.policy import Cond, TextEncoder
from g2rpo.textcache import DiskCachedTextEncoder
from tests.helpers import PROMPTS

MORE = PROMPTS + ["a purple cat", "an orange boat", "a white cloud"]


class Counting(TextEncoder):
    """HashTextEncoder (optionally in bf16) that records the batches it encodes."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.inner, self.dtype, self.batches = HashTextEncoder(), dtype, []

    def encode(self, prompts):
        self.batches.append(list(prompts))
        c = self.inner.encode(prompts)
        return Cond(tokens=c.tokens.to(self.dtype), pooled=c.pooled.to(self.dtype))


class Refusing(TextEncoder):
    def encode(self, prompts):
        raise AssertionError(f"the text encoder was called for {prompts}")

    def __call__(self, prompts):
        raise AssertionError(f"the text encoder was called for {prompts}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_embeddings_are_the_encoders_and_are_not_recomputed(tmp_path, dtype):
    enc = Counting(dtype)
    cache = DiskCachedTextEncoder(enc, tmp_path, "hash-32x8", batch_size=2, shard_size=3)
    assert cache.precompute(MORE) == len(MORE)
    assert enc.batches == [MORE[0:2], MORE[2:4], MORE[4:6], MORE[6:7]]  # batches of batch_size
    assert len(list(cache.folder.glob("*.safetensors"))) == 2  # a shard once >= shard_size prompts, then the rest
    assert cache.precompute(MORE) == 0 and len(enc.batches) == 4
    asked = [MORE[3], MORE[0], MORE[3], MORE[6]]  # order and duplicates as given
    got, want = cache(asked), Counting(dtype).encode(asked)
    assert got.tokens.dtype == dtype and torch.equal(got.tokens, want.tokens) and torch.equal(got.pooled, want.pooled)
    # a new instance whose encoder refuses every call serves everything from disk
    cold = DiskCachedTextEncoder(Refusing(), tmp_path, "hash-32x8")
    again = cold(asked)
    assert torch.equal(again.tokens, want.tokens) and torch.equal(again.pooled, want.pooled)
    assert cold.computed == 0 and len(cold) == len(MORE)
    with pytest.raises(AssertionError, match="new prompt"):  # ...and only an unseen prompt reaches the encoder
        cold(["a new prompt"])


def test_missing_prompts_are_appended_and_a_changed_identity_misses(tmp_path):
    enc = Counting()
    cache = DiskCachedTextEncoder(enc, tmp_path, "hash-32x8")
    first = cache(PROMPTS[:2])
    assert enc.batches == [PROMPTS[:2]]
    mixed = cache([PROMPTS[1], "a purple cat", PROMPTS[0]])
    assert enc.batches[-1] == ["a purple cat"]  # only the missing prompt is encoded, then appended
    assert torch.equal(mixed.tokens[[2, 0]], first.tokens)
    assert torch.equal(cache(["a purple cat"]).tokens, HashTextEncoder().encode(["a purple cat"]).tokens)
    # another encoder identity never sees these embeddings, even in the same folder
    other = Counting()
    changed = DiskCachedTextEncoder(other, tmp_path, "hash-32x8-v2")
    changed(PROMPTS[:2])
    assert other.batches == [PROMPTS[:2]] and changed.computed == 2
    # a second prompt set is a separate file group
    other_set = DiskCachedTextEncoder(Counting(), tmp_path, "hash-32x8", prompt_set="heldout")
    assert other_set.missing(PROMPTS[:2]) == PROMPTS[:2]
    # a stale temporary of a killed writer is neither read nor left behind
    stale = cache.folder / ".0123.safetensors.999999999.tmp"
    stale.write_bytes(b"half a file")
    assert len(DiskCachedTextEncoder(Refusing(), tmp_path, "hash-32x8")) == 3 and not stale.exists()


def shard_with(cache, prompt):
    """The shard file holding ``prompt``."""
    from g2rpo.textcache import prompt_key

    return cache._index[prompt_key(cache.identity, prompt)][0]


def flip_byte_in(data: bytearray, tensor: str) -> None:
    """Flip one bit inside a named tensor's bytes of a safetensors file (the header still parses)."""
    n = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8:8 + n])[tensor]["data_offsets"]
    data[8 + n + (start + end) // 2] ^= 0x40


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip-tokens", "flip-pooled", "flip-key"])
def test_a_corrupt_cache_file_is_an_error_not_a_recompute(tmp_path, damage):
    cache = DiskCachedTextEncoder(HashTextEncoder(), tmp_path, "hash-32x8", shard_size=2, batch_size=2)
    cache.precompute(MORE)
    path = shard_with(cache, MORE[0])
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:  # bit rot: embeddings are caught by their row digest when read, keys by the index checksum
        flip_byte_in(data, damage.removeprefix("flip-"))
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        fresh = DiskCachedTextEncoder(Refusing(), tmp_path, "hash-32x8")
        fresh(MORE[:2])
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "delete the file" in msg
    assert path.read_bytes() == bytes(data)  # left as found, not overwritten by a recompute


def test_a_file_of_another_identity_is_refused(tmp_path):
    a = DiskCachedTextEncoder(HashTextEncoder(), tmp_path, "hash-32x8")
    a(PROMPTS)
    b = DiskCachedTextEncoder(HashTextEncoder(), tmp_path, "other")
    b(PROMPTS)
    # a shard moved into the wrong identity's folder (the folder name no longer says what is inside)
    moved = next(b.folder.glob("*.safetensors"))
    moved.rename(a.folder / "moved.safetensors")
    with pytest.raises(CheckpointError, match="was written for encoder 'other'"):
        DiskCachedTextEncoder(Refusing(), tmp_path, "hash-32x8")
