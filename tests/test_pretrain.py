"""Scenes pretraining: a resumed run equals an uninterrupted one, and the rate schedule is a function of the step."""
import pytest
import torch
from safetensors.torch import load_file

from benchmarks.assets.pretrain import PretrainConfig, lr_at, train
from g2rpo.pocket.model import SCENES_ARCH, GeneratorConfig


def test_rate_warms_up_holds_then_cools_down_to_zero_at_the_cap():
    c = PretrainConfig(lr=1.0, warmup_steps=10, max_steps=100, cooldown_steps=20)
    assert [lr_at(s, c) for s in (0, 9, 50, 80)] == [0.1, 1.0, 1.0, 1.0]
    assert lr_at(90, c) == pytest.approx(0.5) and lr_at(99, c) == pytest.approx(0.05)
    assert lr_at(5000, PretrainConfig(lr=1.0)) == 1.0  # no cool-down: constant, a time-cut run is a shorter run


def test_a_resumed_scenes_run_equals_the_uninterrupted_one(tmp_path):
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    arch = GeneratorConfig(**SCENES_ARCH, num_layers=1, num_single_layers=1, num_attention_heads=1)
    cfg = dict(batch_size=2, warmup_steps=2, ckpt_every=2, task="scenes", arch=arch, threads=1, max_minutes=60)
    quiet = lambda s: None  # noqa: E731
    try:
        train(PretrainConfig(max_steps=4, **cfg), tmp_path / "a.safetensors", tmp_path / "a.json", log=quiet)
        state = tmp_path / "state.pt"
        train(PretrainConfig(max_steps=2, **cfg), tmp_path / "b.safetensors", tmp_path / "b.json", log=quiet, state=state)
        first = load_file(str(tmp_path / "b.safetensors"))
        train(PretrainConfig(max_steps=4, **cfg), tmp_path / "b.safetensors", tmp_path / "b.json", log=quiet, state=state)
    finally:
        torch.set_num_threads(threads), torch.set_rng_state(rng)
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(first[k], b[k]) for k in b)  # the resumed half trained
