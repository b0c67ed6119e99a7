"""ImageReward (Xu et al. 2023, THUDM/ImageReward) rebuilt from maintained transformers classes.

The official ``image-reward`` 1.5 package does not import under transformers 5. Its model is BLIP's ViT-L/16 at 224 px
(here transformers' ``BlipVisionModel``), BLIP's "med" BERT whose layers cross-attend to the image tokens
(``BlipTextModel``) and a 5-layer linear head on the [CLS] state. ``tests/test_imagereward.py`` pins the scores to the
official package's (goldens recorded by ``tests/goldens/record_imagereward.py``).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from . import Reward
from .weights import RewardCheckpointError, identity, load_state, locate, to_pil

SOURCE = "huggingface THUDM/ImageReward, file ImageReward.pt"
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # official standardisation of the head's output
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# Official keys that scoring never reads, allowed present or absent: BLIP's contrastive projections, and the med
# BERT's position-id buffer (an arange, which transformers rebuilds as a non-persistent buffer).
UNUSED = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")
VISION_RENAMES = [  # BLIP's timm-style ViT -> BlipVisionModel; both keep q, k, v fused in one 'qkv' linear
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm(\d)\.", r"encoder.layers.\1.layer_norm\2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.(fc\d)\.", r"encoder.layers.\1.mlp.\2."),
    (r"^norm\.", "post_layernorm."),
]


def rename(key: str) -> str | None:
    """Official ImageReward key -> key of ``ImageRewardModel``; None when it is neither used nor known."""
    if key.startswith("blip.visual_encoder."):
        key = key.removeprefix("blip.visual_encoder.")
        for pattern, repl in VISION_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                return "vision." + new
        return None
    if key.startswith("blip.text_encoder."):  # BlipTextModel kept the med BERT's module names
        return "text." + key.removeprefix("blip.text_encoder.")
    return key if key.startswith("mlp.layers.") else None


class ImageRewardModel(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        self.vision = BlipVisionModel(BlipVisionConfig(  # BLIP 'large': eps 1e-6 as timm's ViT, not the 1e-5 default
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6))
        # is_decoder=True only makes each layer build its cross-attention (med builds it from add_cross_attention);
        # scoring calls it with is_decoder=False, so self-attention stays bidirectional as in the official encoder.
        self.text = BlipTextModel(BlipTextConfig(
            vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=512, hidden_act="gelu", layer_norm_eps=1e-12,
            pad_token_id=0, is_decoder=True), add_pooling_layer=False)
        self.mlp = nn.ModuleDict({"layers": nn.Sequential(  # official head: linear layers, no activations
            nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))})


def match(state: dict[str, torch.Tensor], model: nn.Module, path) -> dict[str, torch.Tensor]:
    """The official state dict under ``model``'s names; RewardCheckpointError unless it fills ``model`` exactly."""
    want = {k: v.shape for k, v in model.state_dict().items()}
    out, unexpected = {}, []
    for key, value in state.items():
        if key.startswith(UNUSED):
            continue
        new = rename(key)
        if new in want and new not in out:
            out[new] = value.float()  # the official module is fp32 and load_state_dict casts into it
        else:
            unexpected.append(key)
    missing = [k for k in want if k not in out]
    shapes = [f"{k} {tuple(v.shape)} != {tuple(want[k])}" for k, v in out.items() if v.shape != want[k]]
    problems = [f"{len(v)} {what} (e.g. {', '.join(v[:3])})" for what, v in
                [("missing", missing), ("unexpected", unexpected), ("of wrong shape", shapes)] if v]
    if problems:
        raise RewardCheckpointError(f"{path} is not an ImageReward checkpoint: {'; '.join(problems)}; "
                                    f"expected ImageReward.pt ({SOURCE})")
    return out


class ImageRewardScore(Reward):
    """ImageReward v1.0: BLIP image-text features -> human-preference score, standardised as the official package."""

    name = "imagereward"
    units = "ImageReward: head output standardised by the official mean and std (human-preference z-score)"
    scale = "mostly [-2.5, 2.5]; mean 0, std 1 over ImageReward's training generations"

    def __init__(self, path="THUDM/ImageReward", tokenizer="bert-base-uncased", device="cpu"):
        from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
        from transformers import BertTokenizer
        from transformers.initialization import no_init_weights

        file = locate(path, "ImageReward.pt, the ImageReward v1.0 weights", SOURCE, "ImageReward.pt")
        state = load_state(file, SOURCE)
        with no_init_weights():  # the strict load below overwrites every tensor; skip initialising 450M of them
            model = ImageRewardModel()
        model.load_state_dict(match(state, model, file), strict=True, assign=True)
        self.model = model.eval().requires_grad_(False).to(device)
        self.checkpoint = identity(file)
        self.tokenizer = BertTokenizer.from_pretrained(str(tokenizer))  # BLIP's init_tokenizer:
        self.tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        self.tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        self.preprocess = Compose([  # the official _transform(224), on the 8-bit PIL image
            Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
            lambda im: im.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im) for im in to_pil(images)]).to(self.device)
        text = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=35,
                              return_tensors="pt").to(self.device)
        image_tokens = self.model.vision(pixel_values=pixels).last_hidden_state
        # no encoder mask: the official one is all ones (every image token attended)
        hidden = self.model.text(input_ids=text.input_ids, attention_mask=text.attention_mask,
                                 encoder_hidden_states=image_tokens, is_decoder=False).last_hidden_state
        reward = self.model.mlp["layers"](hidden[:, 0].float()).squeeze(-1)
        return ((reward - MEAN) / STD).cpu()
