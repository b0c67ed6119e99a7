"""Faults during training: non-finite rewards are masked out, too few finite ones skip the round, NaN never
reaches the weights (issue: reliability)."""
import pytest
import torch

from g2rpo import advantages as A
from g2rpo.loop import Trainer
from g2rpo.models.flux import tiny_flux_policy
from g2rpo.models.text import HashTextEncoder
from g2rpo.registry import METHODS, make_method
from g2rpo.rewards import Brightness
from tests.helpers import PROMPTS, no_decay, shared

NAN = float("nan")


def test_masked_group_zscore_is_the_zscore_of_the_finite_rewards():
    r = torch.tensor([[1.0, NAN, 3.0, 6.0], [2.0, 2.5, float("inf"), NAN], [NAN, 1.0, NAN, NAN]])
    a = A.group_zscore(r)
    assert torch.allclose(a[0, [0, 2, 3]], A.group_zscore(torch.tensor([1.0, 3.0, 6.0])))
    assert torch.allclose(a[1, :2], A.group_zscore(torch.tensor([2.0, 2.5])))
    assert a[0, 1] == 0 and (a[1, 2:] == 0).all() and (a[2] == 0).all()  # masked, and a group of one finite
    assert torch.isfinite(a).all()


def test_masked_flowgrpo_std_uses_the_finite_rewards_of_the_round():
    r = torch.tensor([[1.0, 2.0, NAN], [4.0, 8.0, 5.0]])
    std = torch.tensor([1.0, 2.0, 4.0, 8.0, 5.0]).std(unbiased=False) + 1e-4  # population std of the finite rewards
    expect = torch.tensor([[-0.5, 0.5, 0.0], [4 - 17 / 3, 8 - 17 / 3, 5 - 17 / 3]]) / std
    expect[0, 2] = 0
    assert torch.allclose(A.global_std_advantage(r), expect)
    p = A.per_group_std_advantage(r)
    assert torch.allclose(p[0, :2], A.per_group_std_advantage(torch.tensor([[1.0, 2.0]]))[0]) and p[0, 2] == 0


class Holey(Brightness):
    """Brightness with NaN for a chosen set of image indices."""

    def __init__(self, bad):
        self.bad = bad

    def score(self, images, prompts):
        r = super().score(images, prompts)
        r[self.bad(len(r))] = NAN
        return r


def make_trainer(name, reward):
    sh = shared(rewards={"brightness": 1.0})
    knobs = {"g2rpo": {"eta_step_list": (0, 1, 2)}, "dancegrpo": {"gradient_accumulation_steps": 3, "world_size": 1},
             "mixgrpo": {"gradient_accumulation_steps": 3, "world_size": 1}}
    m = make_method(name, knobs)
    m.optim = no_decay(1e-3)
    return Trainer(tiny_flux_policy(0), HashTextEncoder(), m, {"brightness": reward}, sh, PROMPTS)


@pytest.mark.parametrize("name", list(METHODS))
def test_some_nan_rewards_are_masked_and_weights_stay_finite(name):
    t = make_trainer(name, Holey(lambda n: torch.arange(n) % 4 == 1))
    before = [p.detach().clone() for p in t.policy.parameters()]
    m = t.step()
    assert m["nonfinite_images"] > 0 and m["skipped"] == 0 and m["optimizer_steps"] > 0
    assert all(torch.isfinite(p).all() for p in t.policy.parameters())
    assert any((p - b).abs().max() > 0 for p, b in zip(t.policy.parameters(), before))
    assert torch.isfinite(torch.tensor(m["loss"]))


@pytest.mark.parametrize("name", ["g2rpo", "dancegrpo"])
def test_too_few_finite_rewards_skip_the_round(name):
    t = make_trainer(name, Holey(lambda n: torch.arange(n) % 4 != 0))  # 3 in 4 images fail
    before = [p.detach().clone() for p in t.policy.parameters()]
    m = t.step()
    assert m["skipped"] == 1 and m["optimizer_steps"] == 0 and t.round_idx == 1
    assert all(torch.equal(p, b) for p, b in zip(t.policy.parameters(), before))


def test_a_reward_with_no_finite_value_stops_the_run():
    t = make_trainer("g2rpo", Holey(lambda n: torch.ones(n, dtype=torch.bool)))
    with pytest.raises(FloatingPointError, match="reward 'brightness' returned no finite value"):
        t.step()


@pytest.mark.parametrize("name,knob,value", [("g2rpo", "eta", -0.1), ("dancegrpo", "eta", float("nan")),
                                             ("flowgrpo", "noise_level", 12.0), ("mixgrpo", "clip_range", 0.0),
                                             ("g2rpo", "clip_range", 1.5), ("dancegrpo", "adv_clip_max", -1.0)])
def test_out_of_range_knobs_are_refused(name, knob, value):
    m = make_method(name, {}, **{knob: value})
    with pytest.raises(ValueError, match=knob):
        m.validate(shared(num_steps=10))


def test_group_of_one_is_refused():
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        make_method("g2rpo", {}, eta_step_list=(0,)).validate(shared(num_generations=1))


def test_stale_temporaries_of_dead_writers_are_removed_files_and_folders(tmp_path):
    import os
    import subprocess
    import sys

    from g2rpo.files import remove_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / f".a.json.{pid}.tmp").write_text("half")
    (tmp_path / f".model.{pid}.tmp").mkdir()
    (tmp_path / f".model.{pid}.tmp" / "weights").write_text("half")
    mine = tmp_path / f".b.json.{os.getpid()}.tmp"  # a live writer's file is left alone
    mine.write_text("in progress")
    assert sorted(p.name for p in remove_stale(tmp_path)) == sorted([f".a.json.{pid}.tmp", f".model.{pid}.tmp"])
    assert [p.name for p in tmp_path.iterdir()] == [mine.name]


def test_a_full_disk_mid_write_keeps_the_old_file_and_is_one_line(tmp_path, capsys):
    import errno
    import os

    from benchmarks.render import write_all
    from g2rpo.files import atomic

    (tmp_path / "t.csv").write_text("a\n1\n")

    def make():
        with atomic(tmp_path / "t.csv") as tmp:
            tmp.write_text("a\n")  # half of the new table, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    assert write_all(make, tmp_path, (RuntimeError,)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "No space left on device" in err[0], err
    assert (tmp_path / "t.csv").read_text() == "a\n1\n" and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_images_with_non_finite_pixels_are_one_clear_error_not_a_histogram_failure():
    from eval.generate import score

    images = torch.rand(3, 3, 8, 8)
    images[1, 0, 2, 2] = NAN
    with pytest.raises(FloatingPointError, match="1 of 3 images to score have non-finite pixels"):
        score(images, ["a", "b", "c"], {"brightness": Brightness()})
    assert set(score(images[[0, 2]], ["a", "c"], {"brightness": Brightness()})) >= {"brightness", "stat/colour_entropy"}
