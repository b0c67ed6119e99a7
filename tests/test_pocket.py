"""The pocket tier loads every committed asset offline, with the network blocked."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from g2rpo.pocket import data


@pytest.fixture(autouse=True, scope="module")
def no_network():
    """Any connection attempt fails loudly: the pocket tier must never download."""
    mp = pytest.MonkeyPatch()

    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted in an offline test")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket.socket, "connect_ex", refuse)
    mp.setattr(socket, "create_connection", refuse)
    mp.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)
    yield
    mp.undo()


def test_network_is_blocked():
    with pytest.raises(RuntimeError, match="network"):
        socket.create_connection(("127.0.0.1", 9))


def test_assets_present_and_small():
    files = ["pocket_generator.safetensors", "pocket_generator.json", "reward_heads.safetensors", "reward_heads.json",
             "MODEL_CARD.md", "REWARD_CARD.md", "prompts_train.txt", "prompts_heldout.txt"]
    for f in files:
        assert (data.ASSETS / f).is_file(), f
    weights = sum((data.ASSETS / f).stat().st_size for f in files if f.endswith(".safetensors"))
    assert weights <= 30 * 2**20


def test_asset_tools_run_as_modules_and_the_cards_name_them():
    """The tools that made the assets live in benchmarks.assets (not the library); cards and metadata say so."""
    root = Path(__file__).resolve().parents[1]
    for module, card, meta in (("benchmarks.assets.pretrain", "MODEL_CARD.md", "pocket_generator.json"),
                               ("benchmarks.assets.train_rewards", "REWARD_CARD.md", "reward_heads.json")):
        r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=root, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stderr
        assert f"python -m {module}" in (data.ASSETS / card).read_text()
        assert f'"command": "python -m {module}"' in (data.ASSETS / meta).read_text()


def test_split_is_fixed_and_disjoint():
    train, held = data.prompts("train"), data.prompts("heldout")
    assert len(train) > 1700 and len(held) > 150 and not set(train) & set(held)
    assert set(train) | set(held) == {e.caption for e in data.all_emoji()}
    imgs, caps = data.dataset("heldout", 32)
    assert imgs.shape == (len(held), 3, 32, 32) and caps == held
    assert 0 <= imgs.min() and imgs.max() <= 1


def test_text_encoder():
    from g2rpo.pocket.rewards import text_encoder

    enc = text_encoder()
    c = enc(["a turtle emoji", "the flag of Fiji", "a turtle emoji"])
    assert c.tokens.shape == (3, 16, 384) and c.pooled.shape == (3, 384)
    assert torch.allclose(c.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(c.pooled[0], c.pooled[2]) and not torch.equal(c.pooled[0], c.pooled[1])


def test_effnet_strict_load_classifies_known_images():
    from g2rpo.pocket.effnet import EfficientNetLite0, imagenet_classes, load_effnet, prepare, weights_path

    sd = torch.load(weights_path(), map_location="cpu", weights_only=True)
    EfficientNetLite0().load_state_dict(sd, strict=True)  # raises on any missing or unexpected key
    by_name = {e.name: e for e in data.all_emoji()}
    names = ["bucket", "safety pin", "axe", "hammer", "strawberry"]
    expect = ["bucket", "safety pin", "hatchet", "hammer", "strawberry"]
    imgs = torch.stack([data.render(by_name[n], 72) for n in names])
    probs = load_effnet()(prepare(imgs, 128)).softmax(-1)
    assert [imagenet_classes()[i] for i in probs.argmax(-1)] == expect
    assert probs.max(-1).values[:3].min() > 0.9  # a wrong padding or normalisation drops these well below


def test_rewards_deterministic_batched_and_aligned():
    from g2rpo.image_stats import image_stats
    from g2rpo.pocket.rewards import pocket_rewards

    imgs, caps = data.dataset("heldout", 32)
    imgs, caps = imgs[:6], caps[:6]
    shuffled = caps[1:] + caps[:1]
    for name, r in pocket_rewards().items():
        assert r.units and r.scale and r.checkpoint, name
        a, b = r(imgs, caps), r(imgs, caps)
        assert a.shape == (6,) and a.dtype == torch.float32 and torch.isfinite(a).all()
        assert torch.equal(a, b), name
        one = torch.cat([r(imgs[i : i + 1], caps[i : i + 1]) for i in range(6)])
        assert torch.allclose(a, one, atol=1e-4), name
    align = pocket_rewards()["pocket_align"]
    assert align(imgs, caps).mean() > align(imgs, shuffled).mean() + 0.1
    stats = image_stats(imgs)
    assert all(v.shape == (6,) and torch.isfinite(v).all() for v in stats.values())


def test_policy_loads_and_gives_finite_velocities():
    from g2rpo.pocket.model import euler_sample, load_pocket
    from g2rpo.schedules import shifted_sigmas

    policy, enc = load_pocket()
    assert policy.latent_shape == (3, 32, 32)
    cond = enc(["a turtle emoji", "a banana emoji"])
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = policy(x, torch.tensor(1.0), cond)
    assert v.shape == x.shape and torch.isfinite(v).all() and v.abs().mean() > 0.1
    img = policy.decode(euler_sample(policy, cond, x, shifted_sigmas(4, 3.0)))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_bad_generator_files_give_one_clear_line(tmp_path):
    from safetensors.torch import save_file

    from g2rpo.pocket.model import CONFIG, WEIGHTS, CheckpointError, load_generator

    cases = {"missing": tmp_path / "none.safetensors", "truncated": tmp_path / "cut.safetensors",
             "wrong architecture": tmp_path / "other.safetensors"}
    cases["truncated"].write_bytes(WEIGHTS.read_bytes()[:5000])
    save_file({"x_embedder.weight": torch.zeros(3, 3)}, str(cases["wrong architecture"]))
    for kind, path in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_generator(path, CONFIG)
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg and "reinstall" in msg, (kind, msg)
    assert "does not match the model" in str(pytest.raises(CheckpointError, load_generator, cases["wrong architecture"], CONFIG).value)
