"""The training state (``Trainer.state_dict`` on disk through ``g2rpo.train_state``, the one format of both entry
points): stopping after round r and resuming from the saved state gives the weights of an uninterrupted run after
round r + 1, bit for bit, for every method (no RNG state needed: all noise is keyed by seed, round, prompt)."""
import pytest
import torch

from g2rpo.ema import EMAConfig
from g2rpo.registry import METHODS, make_method
from g2rpo.train_state import load_train_state, save_train_state

from .helpers import shared, trainer


@pytest.mark.parametrize("name", METHODS)
def test_resume_equals_uninterrupted(tmp_path, name):
    sh = shared(rounds=3)
    # beta: the KL reference must stay the base model; ema moving every step: the average is part of the state
    knobs = {"flowgrpo": {"beta": 0.04, "ema": EMAConfig(update_step_interval=1)}, "g2rpo": {"eta_step_list": (0, 1, 2)}}
    whole = trainer(make_method(name, knobs), sh)
    whole.train(2)
    first = trainer(make_method(name, knobs), sh)
    first.train(1)
    save_train_state(first, tmp_path, counters={"cum_nfe": 123})
    resumed = trainer(make_method(name, knobs), sh)  # built on the base model, then the state is loaded
    assert load_train_state(resumed, tmp_path, {"cum_nfe": 0}) == {"cum_nfe": 123}
    assert resumed.round_idx == 1
    resumed.train(1)
    for (k, a), b in zip(whole.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.optimizer_steps == whole.optimizer_steps > 0
    if whole.ema is not None:
        assert all(torch.equal(a, resumed.ema.shadow[k]) for k, a in whole.ema.shadow.items())
    start = trainer(make_method(name, knobs), sh).policy.state_dict()
    assert any(not torch.equal(a, start[k]) for k, a in whole.policy.state_dict().items())
