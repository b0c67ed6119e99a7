"""Paper-tier CLIP-family rewards, built with maintained libraries carrying the official weights.

- HPS-v2.1: open_clip ViT-H-14 with the HPS_v2.1 state dict; cosine of normalised features, no logit scale
  (hpsv2's ``img_score.score``), preprocessed as hpsv2's ``preprocess_val`` does it.
- CLIP score: DFN5B-CLIP-ViT-H-14-378 through open_clip (by default; any DFN5B open_clip folder, e.g. the 224 px
  DFN5B-CLIP-ViT-H-14, loads the same way); cosine of normalised features.
- PickScore: transformers ``CLIPModel`` (PickScore_v1) with the CLIP-H processor; logit_scale * cosine, optionally
  divided by 100 (as the G2RPO paper's tables show it) or 26 (as Flow-GRPO's training reward uses it).
Every reward takes (B, 3, H, W) in [0, 1], quantises to 8 bits (``weights.to_pil``) and scores a batch at once.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError, check_state
from ..errors import one_line
from . import Reward
from .weights import RewardCheckpointError, identity, load_state, locate, to_pil

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    return model.eval().requires_grad_(False)


def hps_preprocess(pil, size: int = 224) -> torch.Tensor:
    """hpsv2's validation transform: to tensor, bicubic resize of the longer side to ``size`` (on the tensor, so
    antialiased), zero padding to a square, normalise. (hpsv2 skips the padding when no resize is needed, which
    only breaks non-square images whose longer side is already ``size``; here they are padded.)"""
    import torchvision.transforms.functional as TF

    x = TF.to_tensor(pil.convert("RGB"))
    h, w = x.shape[1:]
    scale = size / max(h, w)
    if scale != 1.0:
        h, w = round(h * scale), round(w * scale)
        x = TF.resize(x, [h, w], TF.InterpolationMode.BICUBIC)
    x = TF.pad(x, [(size - w) // 2, (size - h) // 2, size - w - (size - w) // 2, size - h - (size - h) // 2], fill=0)
    return TF.normalize(x, OPENAI_MEAN, OPENAI_STD)


class OpenClipCosine(Reward):
    """Cosine of an open_clip model's normalised image and prompt embeddings."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object

    def score(self, images, prompts):
        x = torch.stack([self.preprocess(p) for p in to_pil(images)]).to(self.device)
        img = self.model.encode_image(x, normalize=True)
        txt = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True)
        return (img * txt).sum(-1)


class HPSv21(OpenClipCosine):
    """Human Preference Score v2.1."""

    name = "hps"
    units = "cosine of HPS-v2.1 (open_clip ViT-H-14) image and prompt embeddings"
    scale = "[-1, 1]; ~0.27 (base FLUX.1-dev) to ~0.38 (after RL) in the G2RPO paper"
    source = "HPS_v2.1_compressed.pt from huggingface.co/xswu/HPSv2"

    def __init__(self, path: str | Path = "xswu/HPSv2") -> None:
        import open_clip

        ckpt = locate(path, "HPS_v2.1_compressed.pt", self.source, filename="HPS_v2.1_compressed.pt")
        self.model, _ = _open_clip_model("ViT-H-14", load_state(ckpt, self.source, key="state_dict"), ckpt, self.source)
        self.preprocess = hps_preprocess
        self.tokenizer = open_clip.get_tokenizer("ViT-H-14")
        self.checkpoint = identity(ckpt)


class CLIPScore(OpenClipCosine):
    """CLIP score with DFN5B-CLIP-ViT-H-14-378 (the G2RPO paper's second training reward)."""

    name = "clip"
    units = "cosine of DFN5B-CLIP-ViT-H-14-378 image and prompt embeddings"
    scale = "[-1, 1]; ~0.36-0.41 in the G2RPO paper"
    source = "open_clip_config.json + open_clip weights from huggingface.co/apple/DFN5B-CLIP-ViT-H-14-378"

    def __init__(self, path: str | Path = "apple/DFN5B-CLIP-ViT-H-14-378") -> None:
        import open_clip

        folder = locate(path, "a folder with open_clip_config.json and open_clip weights", self.source)
        cfg_file = folder / "open_clip_config.json"
        if not cfg_file.is_file():
            raise RewardCheckpointError(f"{cfg_file} is missing: expected {self.source}")
        weights = [folder / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if (folder / n).is_file()]
        if not weights:
            raise RewardCheckpointError(f"{folder} holds no open_clip_model.safetensors or open_clip_pytorch_model.bin; "
                                        f"expected {self.source}")
        name = f"local-dir:{folder}"  # open_clip reads the architecture and preprocessing from the folder's config
        self.model, self.preprocess = _open_clip_model(name, load_state(weights[0], self.source, key="state_dict"),
                                                       weights[0], self.source)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.checkpoint = identity(weights[0])
        size = self.model.visual.image_size  # the folder's variant: 378 px for -378 (hub alias -384), 224 px without
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.units = f"cosine of {Path(str(path)).name} ({size} px) image and prompt embeddings"


class PickScore(Reward):
    """PickScore_v1: logit_scale * cosine of CLIP-H embeddings, with the paper's named scale conventions."""

    units = "PickScore_v1 logit_scale * cosine"
    source = "PickScore_v1 from huggingface.co/yuvalkirstain/PickScore_v1 (processor: laion/CLIP-ViT-H-14-laion2B-s32B-b79K)"
    DIVISORS = {"pickscore": 1.0, "pickscore_100": 100.0, "pickscore_26": 26.0}
    """pickscore: raw (~22); pickscore_100: as the G2RPO paper shows it (~0.22); pickscore_26: Flow-GRPO's reward."""

    def __init__(self, path: str | Path = "yuvalkirstain/PickScore_v1",
                 processor: str | Path = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", name: str = "pickscore") -> None:
        from transformers import AutoProcessor, CLIPModel

        if name not in self.DIVISORS:
            raise ValueError(f"PickScore name must be one of {', '.join(self.DIVISORS)}, got {name!r}")
        self._set_scale(name)
        folder = locate(path, "a transformers CLIPModel folder (config.json + weights)", self.source)
        proc = locate(processor, "a CLIP processor folder (preprocessor and tokenizer files)", self.source)
        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if not (folder / "config.json").is_file() or not weights:
            raise RewardCheckpointError(f"{folder} lacks config.json or weights; expected {self.source}")
        try:  # transformers loads .bin with weights_only=True; wrong shapes fail here
            model, info = CLIPModel.from_pretrained(str(folder), output_loading_info=True,
                                                    use_safetensors=weights[0].suffix == ".safetensors")
            self.processor = AutoProcessor.from_pretrained(str(proc))
        except (OSError, ValueError, RuntimeError) as e:
            raise RewardCheckpointError(f"{folder} or {proc} cannot be loaded ({one_line(e)}); "
                                        f"expected {self.source}") from None
        bad = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:  # transformers would otherwise initialise missing tensors at random and only warn
            raise RewardCheckpointError(f"{weights[0]} does not match the CLIPModel config: "
                                        + ", ".join(f"{len(v)} {k.replace('_', ' ')} (first: {v[0]})" for k, v in bad.items())
                                        + f"; expected {self.source}")
        self.model = _frozen(model)
        self.checkpoint = identity(weights[0])

    def _set_scale(self, name: str) -> None:
        self.name, self.divisor = name, self.DIVISORS[name]
        self.scale = f"raw ~22 for good images; reported divided by {self.divisor:g}"

    def as_scale(self, name: str) -> "PickScore":
        """The same model reported under another named scale (no second copy of the weights)."""
        view = copy.copy(self)
        view._set_scale(name)
        return view

    def score(self, images, prompts):
        pix = self.processor(images=to_pil(images), return_tensors="pt")["pixel_values"].to(self.device)
        tok = self.processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt").to(self.device)
        img = F.normalize(_features(self.model.get_image_features(pixel_values=pix)), dim=-1)
        txt = F.normalize(_features(self.model.get_text_features(**tok)), dim=-1)
        return self.model.logit_scale.exp() * (img * txt).sum(-1) / self.divisor


def _features(out) -> torch.Tensor:
    """transformers 5 returns a model output where 4.x returned the projected embeddings tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _open_clip_model(name: str, state: dict, path: Path, source: str):
    """(model, validation preprocessing) of open_clip architecture ``name`` holding ``state``. Keys and shapes are
    checked on a meta-device skeleton first, so a wrong file is refused in a second, not after building 1B parameters."""
    import open_clip

    with torch.device("meta"):
        skeleton = open_clip.create_model(name, load_weights=False, device="meta")
    try:
        check_state(skeleton, state, path, source)
    except CheckpointError as e:
        raise RewardCheckpointError(str(e)) from None
    model, _, preprocess = open_clip.create_model_and_transforms(name, load_weights=False)
    model.load_state_dict(state, strict=True)
    return _frozen(model), preprocess
