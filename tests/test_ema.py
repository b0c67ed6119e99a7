"""Weight averaging for evaluation (g2rpo.ema): Flow-GRPO's official schedule, its place in the Trainer, its state."""
import dataclasses

import pytest
import torch

from g2rpo.ema import EMA, EMAConfig, ema_decay, moves_at
from g2rpo.registry import METHODS, make_method

from .helpers import no_decay, shared, trainer


def test_decay_ramps_then_caps_and_moves_every_interval():
    assert ema_decay(0, 0.9) == 1 / 10 and ema_decay(7, 0.9) == 8 / 17 and ema_decay(80, 0.9) == 0.9
    assert ema_decay(7, 0.995, warmup=False) == 0.995
    assert [s for s in range(1, 25) if moves_at(s, EMAConfig())] == [7, 15, 23]


def test_step_is_the_official_recurrence():
    cfg = EMAConfig(decay=0.5, update_step_interval=2, repeats=2)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ema, expect = EMA({"w": w}, cfg), w.detach().clone()
    for s in range(1, 8):
        with torch.no_grad():
            w.mul_(1.5).add_(0.25)  # an optimizer step
        moved = ema.step({"w": w}, s)
        if s % 2 == 1:  # (s + 1) % 2 == 0
            keep = min((1 + s) / (10 + s), 0.5)
            for _ in range(2):
                expect = expect + (1 - keep) * (w.detach() - expect)
        assert moved == (s % 2 == 1)
        torch.testing.assert_close(ema.shadow["w"], expect, rtol=0, atol=1e-6)


def test_applied_swaps_in_the_average_and_restores_the_live_weights_on_error():
    w = torch.nn.Parameter(torch.tensor([3.0]))
    ema = EMA({"w": w}, EMAConfig())
    ema.shadow["w"].fill_(1.0)
    with pytest.raises(RuntimeError), ema.applied({"w": w}):
        assert w.item() == 1.0
        raise RuntimeError("evaluation failed")
    assert w.item() == 3.0 and w.requires_grad


def test_flowgrpo_keeps_the_official_average_and_the_others_none():
    official = EMAConfig(decay=0.9, update_step_interval=8, repeats=1, warmup=True)
    assert make_method("flowgrpo").ema == official
    assert make_method("flowgrpo-fast").ema == official  # the same trainer (official fast presets: train.ema)
    # DiffusionNFT (same codebase) averages after every optimizer step: official EMAModuleWrapper(decay=0.9, interval 1)
    assert make_method("diffusionnft").ema == dataclasses.replace(official, update_step_interval=1)
    assert all(make_method(m).ema is None for m in METHODS if METHODS[m].family not in ("flowgrpo", "diffusionnft"))


def test_trainer_moves_the_average_after_the_right_optimizer_step():
    """Smoke Flow-GRPO takes 2 optimizer steps a round; with interval 3 the average moves after step 2 (end of
    round 0, decay 3/12) and not again before step 5, so after round 1 it still holds base + 0.75 (w_2 - base)."""
    tr = trainer(make_method("flowgrpo", ema=EMAConfig(update_step_interval=3), optim=no_decay()), shared(rounds=2))
    base = {n: p.detach().clone() for n, p in tr._trained().items()}
    tr.train(1)
    assert tr.optimizer_steps == 2
    w2 = {n: p.detach().clone() for n, p in tr._trained().items()}
    tr.train(1)
    assert tr.optimizer_steps == 4
    for n, s in tr.ema.shadow.items():
        torch.testing.assert_close(s, base[n] + 0.75 * (w2[n] - base[n]), rtol=0, atol=1e-7)
    live = {n: p.detach().clone() for n, p in tr._trained().items()}
    assert any(not torch.equal(live[n], w2[n]) for n in live)  # the live weights went on
    with tr.evaluation_weights():
        assert all(torch.equal(p, tr.ema.shadow[n]) for n, p in tr._trained().items())
    assert all(torch.equal(p, live[n]) for n, p in tr._trained().items())


def test_a_state_without_the_average_is_refused():
    tr = trainer(make_method("flowgrpo"), shared())
    state = tr.state_dict()
    del state["ema"]
    with pytest.raises(ValueError, match="no weight average"):
        trainer(make_method("flowgrpo"), shared()).load_state_dict(state)
