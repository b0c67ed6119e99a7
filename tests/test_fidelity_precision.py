"""Precision options that reproduce the official code's numerics (docs/methods.md, "Precision and numerics vs the official code"):
G2RPO's bf16 anchor storage, fp16 autocast for reward scoring, and the DFN5B CLIP variant a folder holds."""
from __future__ import annotations

import json

import pytest
import torch

from g2rpo.granular import G2RPO, G2RPOConfig
from g2rpo.rewards import Brightness
from g2rpo.rewards.clip_family import OPENAI_MEAN, OPENAI_STD, CLIPScore
from tests.helpers import rollout, shared, trainer


def method(**kw):
    return G2RPO(G2RPOConfig(**({"eta_step_list": (0, 2, 3), "granular_list": (1, 2, 3)} | kw)))


def bf16_exact(t: torch.Tensor) -> bool:
    return torch.equal(t, t.to(torch.bfloat16).float())


def test_bf16_anchor_storage_rounds_only_the_stored_anchor_latents():
    sh = shared()
    _, _, exact = rollout(method(), sh)
    _, _, rounded = rollout(method(anchor_dtype="bf16"), sh)
    a, b = exact.transitions, rounded.transitions
    assert method().cfg.anchor_dtype == "fp32"  # the default keeps the published pocket numerics
    assert bf16_exact(b.x) and not bf16_exact(a.x)
    assert torch.equal(b.x, a.x.to(torch.bfloat16).float())  # the same anchor, rounded once when stored
    assert torch.equal(rounded.extra_images["ode"], exact.extra_images["ode"])  # the anchor ODE itself runs in fp32
    moved = (b.x_next - a.x_next).abs().max().item()
    assert 1e-3 < moved < 2e-2, moved  # measured 6.6e-3 here (|x| up to 3.2: half a bf16 ulp is 7.8e-3)
    assert 0 < (rounded.images - exact.images).abs().max() < 1e-2
    torch.testing.assert_close(b.log_prob_old, a.log_prob_old, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["batched", "reference"])
def test_bf16_anchor_cost_matches_counted_calls_and_first_ratio_is_one(mode):
    sh = shared(num_steps=7)
    m = method(anchor_dtype="bf16", rollout_mode=mode, eta_step_list=(0, 1, 4))
    metrics = trainer(m, sh).step()
    P = sh.prompts_per_round
    assert metrics["nfe_rollout"] == P * m.cost(sh).nfe_rollout
    if mode == "batched":  # one velocity per k at the rounded x_k, shared by the G members
        assert m.cost(sh).nfe_rollout == method(eta_step_list=(0, 1, 4)).cost(sh).nfe_rollout + 3
    # batched: the rollout's velocity at x_k is the training forward's bit for bit; reference: batch-1 float noise
    assert metrics["first_ratio_max_dev"] == 0.0 if mode == "batched" else metrics["first_ratio_max_dev"] < 1e-6


def test_unknown_anchor_dtype_is_refused():
    with pytest.raises(ValueError, match="anchor_dtype"):
        G2RPOConfig(anchor_dtype="fp16")


# ---- rewards ----
def tiny_dfn_folder(root, name: str, image_size: int):
    """A DFN5B-layout open_clip folder with a tiny random ViT (the architecture is read from its config)."""
    import open_clip

    folder = root / name
    folder.mkdir()
    cfg = {"model_cfg": {"embed_dim": 16, "quick_gelu": True,
                         "vision_cfg": {"image_size": image_size, "layers": 1, "width": 32, "head_width": 16,
                                        "patch_size": 14 * (image_size // 112)},
                         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
           "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                              "resize_mode": "squash"}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def images(n=3):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 40, 48, generator=g)


PROMPTS = ["a red apple", "a cat in a hat", "a blue sky"]


def test_clip_score_loads_the_224px_dfn5b_variant_and_names_it(tmp_path):
    base = CLIPScore(tiny_dfn_folder(tmp_path, "DFN5B-CLIP-ViT-H-14", 224))
    assert base.model.visual.image_size == (224, 224)
    assert base.units == "cosine of DFN5B-CLIP-ViT-H-14 (224 px) image and prompt embeddings"
    hi = CLIPScore(tiny_dfn_folder(tmp_path, "DFN5B-CLIP-ViT-H-14-378", 378))
    assert hi.units == "cosine of DFN5B-CLIP-ViT-H-14-378 (378 px) image and prompt embeddings"
    assert base(images(), PROMPTS).shape == (3,)


def test_fp16_autocast_scoring_runs_the_network_in_fp16_and_returns_fp32(tmp_path):
    reward = CLIPScore(tiny_dfn_folder(tmp_path, "DFN5B-CLIP-ViT-H-14", 224))
    seen = []
    hook = reward.model.visual.transformer.resblocks[0].mlp.c_fc.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype))
    x = images()
    ref = reward(x, PROMPTS)
    reward.autocast = "fp16"  # the official HPS scoring: torch.amp.autocast('cuda'), fp16 (here on the CPU)
    got = reward(x, PROMPTS)
    hook.remove()
    assert seen == [torch.float32, torch.float16] and reward.describe()["autocast"] == "fp16"
    assert got.dtype == torch.float32 and not torch.equal(got, ref)
    torch.testing.assert_close(got, ref, atol=5e-3, rtol=0)
    reward.autocast = "bf16"
    with pytest.raises(ValueError, match="autocast"):
        reward(x, PROMPTS)


def test_weight_free_rewards_are_unchanged_by_default():
    r = Brightness()
    assert r.autocast is None and "autocast" not in r.describe()
    x = images()
    assert torch.equal(r(x, PROMPTS), x.mean(dim=(1, 2, 3)))
