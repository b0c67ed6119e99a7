"""benchmarks.driver: the rounds both entry points run, their counters, and the state they continue from."""
import pytest
import torch

from benchmarks.driver import Driver
from g2rpo.registry import make_method

from .helpers import shared, trainer


def test_driver_counts_saves_and_resumes(tmp_path):
    sh = shared(rounds=3)
    knobs = {"g2rpo": {"eta_step_list": (0, 1)}}
    whole = Driver(trainer(make_method("g2rpo", knobs), sh))
    before = []
    metrics = list(whole.rounds(3, before=before.append))
    assert before == [0, 1, 2] and [m["round"] for m in metrics] == [0, 1, 2]
    assert whole.cum_nfe == sum(m["nfe_rollout"] + m["nfe_train"] + m["nfe_reference"] for m in metrics) > 0
    assert whole.elapsed() > 0 and whole.paused(lambda: 7) == 7

    first = Driver(trainer(make_method("g2rpo", knobs), sh), tmp_path)
    assert not first.resume()  # no state yet: round 0
    for m in first.rounds(3):
        if m["round"] == 1:
            break  # killed after logging round 1, before its save: round 1 runs again
    again = Driver(trainer(make_method("g2rpo", knobs), sh), tmp_path)
    assert again.resume() and again.trainer.round_idx == 1 and again.cum_nfe == metrics[0]["nfe_rollout"] + \
        metrics[0]["nfe_train"] + metrics[0]["nfe_reference"]
    rest = list(again.rounds(3))
    assert [m["round"] for m in rest] == [1, 2] and again.cum_nfe == whole.cum_nfe
    for (k, a), b in zip(whole.trainer.policy.state_dict().items(), again.trainer.policy.state_dict().values()):
        assert torch.equal(a, b), k


def test_driver_stops_on_a_non_finite_loss(monkeypatch):
    d = Driver(trainer(make_method("g2rpo", {"g2rpo": {"eta_step_list": (0,)}}), shared(rounds=2)))
    monkeypatch.setattr(d.trainer, "step", lambda: {"round": 0, "loss": float("nan")})
    with pytest.raises(FloatingPointError, match="non-finite loss at round 0"):
        next(d.rounds(2))


def test_state_saves_are_not_training_seconds(tmp_path, monkeypatch):
    """A clock that only the state save moves: the training seconds stay where the rounds left them."""
    import benchmarks.driver as driver

    clock = {"now": 0.0}
    monkeypatch.setattr(driver.time, "perf_counter", lambda: clock["now"])
    real_save = driver.save_train_state

    def slow_save(*args):
        clock["now"] += 100.0
        return real_save(*args)

    monkeypatch.setattr(driver, "save_train_state", slow_save)
    d = Driver(trainer(make_method("g2rpo", {"g2rpo": {"eta_step_list": (0,)}}), shared(rounds=2)), tmp_path)
    assert len(list(d.rounds(2))) == 2 and d.elapsed() == 0.0
