"""Paper-tier CLIP-family rewards on their real architectures with random weights, against the official scoring.

HPS-v2.1 is compared with hpsv2 1.2.0's own ``img_score.score`` (its package lacks the BPE vocabulary file its
open_clip fork reads at import; the test supplies open_clip's identical file in a copy of the package, never in
site-packages). CLIP score and PickScore have no scoring package of their own: their official code is open_clip and
transformers, so they are compared with the model cards' recipes written out here, one prompt at a time.
Each model is a ~1B-parameter ViT-H; the module takes a few minutes on 2 cores.
"""
from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from g2rpo.rewards.clip_family import OPENAI_MEAN, OPENAI_STD, CLIPScore, HPSv21, PickScore, hps_preprocess
from g2rpo.rewards.weights import RewardCheckpointError

pytestmark = pytest.mark.paper


PROMPTS = ["a red apple on a table", "a cat wearing a tiny hat",
           "an extremely long prompt " + "with many repeated words " * 20 + "that overflows the context"]


def images(n=3, h=64, w=64, seed=0) -> torch.Tensor:
    """Smooth colour fields plus noise: random CLIPs still tell these apart."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-3, 3, size=(3, 3))
        img = np.stack([0.5 + 0.4 * np.sin(a[k] * xx + b[k] * yy + c[k]) for k in range(3)])
        out.append(np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1))
    return torch.tensor(np.stack(out), dtype=torch.float32)


def pil(x: torch.Tensor):
    return Image.fromarray((x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


@pytest.fixture(scope="module")
def hpsv2_pkg(tmp_path_factory):
    """hpsv2 imported from a copy of the installed package that holds the missing vocabulary file."""
    import open_clip

    spec = importlib.util.find_spec("hpsv2")
    assert spec is not None, "hpsv2 is not installed: see the README's test command"
    root = tmp_path_factory.mktemp("hpsv2pkg")
    shutil.copytree(Path(spec.origin).parent, root / "hpsv2")
    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copy(vocab, root / "hpsv2" / "src" / "open_clip" / vocab.name)
    saved = {k: v for k, v in sys.modules.items() if k == "hpsv2" or k.startswith("hpsv2.")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("hpsv2.img_score")
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k == "hpsv2" or k.startswith("hpsv2.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def hps_official(hpsv2_pkg, tmp_path_factory):
    """hpsv2's model exactly as ``initialize_model`` builds it, minus the base-weight download; its random
    weights saved as an HPS checkpoint ({'state_dict': ...})."""
    from hpsv2.src.open_clip import create_model_and_transforms

    torch.manual_seed(0)
    model, _, preprocess_val = create_model_and_transforms(
        "ViT-H-14", None, precision="amp", device="cpu", jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False, with_region_predictor=False)
    ckpt = tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    hpsv2_pkg.model_dict.update(model=model, preprocess_val=preprocess_val)  # the package's own model cache
    del model  # the package's cache holds it until the scoring test clears it (4 GB)
    yield hpsv2_pkg, ckpt, preprocess_val
    hpsv2_pkg.model_dict.clear()


def test_hps_preprocessing_equals_hpsv2_for_any_size(hps_official):
    _, _, preprocess_val = hps_official
    for h, w in ((64, 64), (48, 80), (300, 200), (40, 40)):
        img = pil(images(1, h, w, seed=h)[0])
        assert torch.equal(hps_preprocess(img), preprocess_val(img)), (h, w)


def test_hps_equals_hpsv2_scoring(hps_official):
    img_score, ckpt, _ = hps_official
    x = images(3)
    ours = HPSv21(ckpt)
    got = ours(x, PROMPTS)
    ref = torch.tensor([img_score.score([pil(xi)], p, cp=str(ckpt), hps_version="v2.1")[0] for xi, p in zip(x, PROMPTS)])
    img_score.model_dict.pop("model")  # free hpsv2's copy before the next ViT-H is built
    assert ref.std() > 1e-3  # random weights still separate the pairs, so the comparison can fail
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)  # fp32 on both sides; batched vs one at a time
    assert "sha256:" in ours.checkpoint and ours.name == "hps"


def test_hps_refuses_a_wrong_or_unsafe_checkpoint(hps_official, tmp_path):
    _, ckpt, _ = hps_official
    with pytest.raises(RewardCheckpointError, match="HPS_v2.1_compressed.pt.*xswu/HPSv2"):
        HPSv21(tmp_path / "nowhere")
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    state.pop("logit_scale")
    torch.save({"state_dict": state}, tmp_path / "HPS_v2.1_compressed.pt")
    with pytest.raises(RewardCheckpointError, match="1 missing"):
        HPSv21(tmp_path)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "opt": Path(".")}, tmp_path / "HPS_v2.1_compressed.pt")
    with pytest.raises(RewardCheckpointError, match="weights-only"):
        HPSv21(tmp_path)


@pytest.fixture(scope="module")
def dfn_folder(tmp_path_factory):
    """A hub-layout DFN5B folder (open_clip_config.json + open_clip_pytorch_model.bin) with random weights."""
    import open_clip

    folder = tmp_path_factory.mktemp("DFN5B-CLIP-ViT-H-14-378")
    cfg = {"model_cfg": open_clip.get_model_config("ViT-H-14-378-quickgelu"),
           "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                              "resize_mode": "squash"}}  # as open_clip's dfn5b pretrained entry declares it
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def test_clip_score_equals_the_model_card_recipe(dfn_folder):
    import open_clip
    import torch.nn.functional as F

    x = images(3, 80, 60)  # non-square: the 'squash' resize of the folder's preprocessing config must be used
    ours = CLIPScore(dfn_folder)
    got = ours(x, PROMPTS)
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{dfn_folder}")
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-H-14")
    ref = []
    with torch.no_grad():
        for xi, p in zip(x, PROMPTS):
            img = F.normalize(model.encode_image(preprocess(pil(xi)).unsqueeze(0)), dim=-1)
            txt = F.normalize(model.encode_text(tokenizer([p], context_length=model.context_length)), dim=-1)
            ref.append((img @ txt.T).item())
    ref = torch.tensor(ref)
    assert ours.model.visual.image_size == (378, 378) and ref.std() > 1e-3
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)


def test_clip_score_refuses_missing_and_wrong_weights(dfn_folder, tmp_path):
    with pytest.raises(RewardCheckpointError, match="apple/DFN5B-CLIP-ViT-H-14-378"):
        CLIPScore(tmp_path / "DFN5B-CLIP-ViT-H-14-378")
    shutil.copy(dfn_folder / "open_clip_config.json", tmp_path)
    with pytest.raises(RewardCheckpointError, match="holds no open_clip"):
        CLIPScore(tmp_path)
    torch.save({"visual.proj": torch.zeros(3)}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(RewardCheckpointError, match="does not match the model's architecture"):
        CLIPScore(tmp_path)


PICK_CONFIG = dict(  # yuvalkirstain/PickScore_v1 = laion CLIP-ViT-H-14 in transformers' layout
    text_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                     max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", bos_token_id=0, eos_token_id=2,
                     pad_token_id=1),
    vision_config=dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                       patch_size=14, image_size=224, hidden_act="gelu"),
    projection_dim=1024)


def clip_processor(folder: Path):
    """A CLIP-H processor folder: CLIP's image preprocessing defaults and its BPE tokenizer, built from the
    vocabulary file open_clip ships (the same BPE as laion/CLIP-ViT-H-14-laion2B-s32B-b79K's tokenizer)."""
    import gzip

    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    lines = gzip.open(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz").read().decode().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pickscore_folders(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    root = tmp_path_factory.mktemp("pick")
    torch.manual_seed(2)
    CLIPModel(CLIPConfig(**PICK_CONFIG)).save_pretrained(root / "PickScore_v1")
    return root / "PickScore_v1", clip_processor(root / "processor")


def test_pickscore_equals_the_model_card_recipe_in_every_scale(pickscore_folders):
    from transformers import AutoModel, AutoProcessor

    folder, proc_dir = pickscore_folders
    processor = AutoProcessor.from_pretrained(proc_dir)  # PickScore's published inference code from here on
    model = AutoModel.from_pretrained(folder).eval()
    x = images(3)
    ref = []
    with torch.no_grad():  # one prompt and one image at a time
        for xi, p in zip(x, PROMPTS):
            image_inputs = processor(images=[pil(xi)], padding=True, truncation=True, max_length=77, return_tensors="pt")
            text_inputs = processor(text=p, padding=True, truncation=True, max_length=77, return_tensors="pt")
            image_embs = model.get_image_features(**image_inputs).pooler_output
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs).pooler_output
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            ref.append((model.logit_scale.exp() * (text_embs @ image_embs.T)[0]).item())
    ref = torch.tensor(ref)
    del model
    assert ref.std() > 1e-2
    raw = PickScore(folder, proc_dir)
    torch.testing.assert_close(raw(x, PROMPTS), ref, atol=3e-4, rtol=0)  # ~14 x cosine: fp32 noise scaled by 14
    for name, d in (("pickscore_100", 100), ("pickscore_26", 26)):
        r = raw.as_scale(name)
        assert r.name == name and r.model is raw.model and raw.name == "pickscore"
        torch.testing.assert_close(r(x, PROMPTS), ref / d, atol=3e-4 / d, rtol=0)


def test_pickscore_refuses_missing_and_partial_weights(pickscore_folders, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, proc_dir = pickscore_folders
    with pytest.raises(RewardCheckpointError, match="yuvalkirstain/PickScore_v1"):
        PickScore(tmp_path / "PickScore_v1", proc_dir)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(folder / "config.json", partial)
    state = load_file(str(folder / "model.safetensors"))
    state.pop("visual_projection.weight")
    save_file(state, str(partial / "model.safetensors"))
    with pytest.raises(RewardCheckpointError, match="visual_projection.weight"):  # transformers would init it at random
        PickScore(partial, proc_dir)
    with pytest.raises(ValueError, match="pickscore_100"):
        PickScore(folder, proc_dir, name="pickscore_10")


def test_registry_shares_pickscore_and_lays_out_hub_folders(pickscore_folders, tmp_path):
    from g2rpo.rewards.registry import PAPER_REWARDS, RewardPaths, paper_rewards

    folder, proc_dir = pickscore_folders
    got = paper_rewards(["pickscore_26", "pickscore"], RewardPaths(pickscore=str(folder), pickscore_processor=str(proc_dir)))
    assert got["pickscore"].model is got["pickscore_26"].model and got["pickscore_26"].divisor == 26
    paths = RewardPaths.under(tmp_path)
    assert Path(paths.hps) == tmp_path / "HPSv2" and Path(paths.imagereward_tokenizer) == tmp_path / "bert-base-uncased"
    assert set(PAPER_REWARDS) == {"hps", "clip", "pickscore", "pickscore_100", "pickscore_26", "imagereward"}
    with pytest.raises(KeyError, match="unknown paper-tier rewards"):
        paper_rewards(["hpsv3"])


def test_evaluate_scores_with_a_paper_reward_from_reward_dir(hps_official, tmp_path):
    import pandas as pd

    from eval.evaluate import main

    _, ckpt, _ = hps_official
    (tmp_path / "weights" / "HPSv2").mkdir(parents=True)
    (tmp_path / "weights" / "HPSv2" / ckpt.name).symlink_to(ckpt)
    assert main(["--tier", "tiny", "--steps", "2", "--threads", "2", "--out", str(tmp_path / "ev"),
                 "--rewards", "brightness,hps", "--reward-dir", str(tmp_path / "weights")]) == 0
    s = pd.read_csv(tmp_path / "ev" / "summary.csv").set_index("reward")
    assert s.loc["hps", "domain"] == "out" and s.loc["hps", "checkpoint"].startswith("HPS_v2.1_compressed.pt sha256:")
    assert s.loc["hps", "n"] == 4 and s.loc["hps", "std"] > 0
