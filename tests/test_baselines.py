"""The baselines on the shared loop (algorithms.md §4-§6, §8): noise placement, trained steps, advantages, cost."""
import dataclasses

import pytest
import torch

from baselines.dancegrpo import DanceGRPO, DanceGRPOConfig
from baselines.flowgrpo import FlowGRPO, FlowGRPOConfig
from baselines.mixgrpo import MixGRPO, MixGRPOConfig
from baselines.trajectory import trajectory_layout
from g2rpo.config import assert_same_shared
from g2rpo.granular import G2RPO, G2RPOConfig
from g2rpo.loop import generator, initial_noise
from g2rpo.method import Layout
from g2rpo.registry import METHODS, make_method
from tests.helpers import no_decay, rollout, shared, trainer


def differs(a, b):
    return (a - b).abs().max() > 1e-4


def members_differ_at(ro, j):
    lat = ro.latents[j]  # (P, G, ...)
    return [differs(lat[p, 0], lat[p, 1]) for p in range(lat.shape[0])]


def test_noise_placement():
    sh = shared(num_steps=8)
    _, _, dance = rollout(DanceGRPO(), sh)
    assert members_differ_at(dance, 0) == [False, False] and all(members_differ_at(dance, 1))
    _, _, flow = rollout(FlowGRPO(), sh)
    assert all(members_differ_at(flow, 0))
    _, _, flow_shared = rollout(FlowGRPO(FlowGRPOConfig(init_same_noise=True)), sh)
    assert members_differ_at(flow_shared, 0) == [False, False] and all(members_differ_at(flow_shared, 1))
    mix = MixGRPO(MixGRPOConfig(window_size=3, window_shift_every=2))
    _, _, ro = rollout(mix, sh, round_idx=4)  # window starts at step 2: SDE on steps 2, 3, 4
    assert mix.candidate_steps(8, 4) == [2, 3, 4]
    for j in range(9):
        assert all(members_differ_at(ro, j)) == (j > 2) and any(members_differ_at(ro, j)) == (j > 2), j
    assert mix.candidate_steps(8, 1000) == [3, 4, 5]  # 500 moves: past N-2 = 6 it rolls back, as official


def groups_and_mask(method, sh, round_idx=0):
    _, _, ro = rollout(method, sh, round_idx=round_idx)
    P, G = sh.prompts_per_round, sh.num_generations
    method.advantages(ro, {"brightness": torch.randn(P * G, generator=torch.Generator().manual_seed(1))},
                      {"brightness": 1.0})
    groups = method.update_groups(ro, generator(0, "train", round_idx))
    return ro, groups


def trained_steps(ro):
    P, G, S = trajectory_layout(ro)
    tr = ro.transitions
    return [tr.k.view(P * G, S)[i][tr.mask.view(P * G, S)[i]].tolist() for i in range(P * G)]


def test_trained_transition_selection():
    sh = shared(num_steps=16, num_generations=4)
    ro, groups = groups_and_mask(DanceGRPO(DanceGRPOConfig(gradient_accumulation_steps=3, world_size=1)), sh)
    steps = trained_steps(ro)
    assert all(len(s) == 9 and len(set(s)) == 9 and max(s) < 15 for s in steps)  # int(0.6 * 15) of the first 15
    assert len({tuple(s) for s in steps}) == len(steps)  # a fresh subset per sample
    assert [len(g) for g in groups] == [3 * 15, 3 * 15, 2 * 15]  # 8 samples, 3 per optimizer step
    assert sorted(torch.cat(groups).tolist()) == list(range(8 * 15))
    ro, groups = groups_and_mask(FlowGRPO(), sh)
    assert all(s == list(range(15)) for s in trained_steps(ro))  # int(0.99 * 16) = 15, in order
    assert len(groups) == 2
    ro, _ = groups_and_mask(MixGRPO(MixGRPOConfig(window_shift_every=1)), sh, round_idx=3)
    assert all(s == [3, 4, 5, 6] for s in trained_steps(ro))


def test_advantages_hand_computed():
    r = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    pop_std = torch.tensor([1.0, 2, 3, 4, 4, 4]).std(unbiased=False)
    expected = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]) / (pop_std + 1e-4)
    flow = FlowGRPO()
    assert torch.allclose(flow.sample_advantages({"a": r}, {"a": 1.0}), expected, atol=1e-6)
    per_group = FlowGRPO(FlowGRPOConfig(global_std=False)).sample_advantages({"a": r}, {"a": 1.0})
    assert torch.allclose(per_group[0], torch.tensor([-1.0, 0.0, 1.0]) / (torch.tensor(2 / 3).sqrt() + 1e-4), atol=1e-5)
    # official multi_score: the advantage of the weighted sum of rewards
    summed = flow.sample_advantages({"a": r, "b": 2 * r}, {"a": 1.0, "b": 0.5})
    assert torch.allclose(summed, flow.sample_advantages({"a": 2 * r}, {"a": 1.0}), atol=1e-6)
    # zero-advantage samples are dropped
    ro = type("R", (), {"layout": Layout(prompts=2, generations=3, steps=1), "transitions": type("T", (), {})()})()
    flow.advantages(ro, {"a": r.reshape(-1)}, {"a": 1.0})
    assert ro.transitions.mask.view(-1).tolist() == [True, False, True, False, False, False]
    # DanceGRPO: group z-score with unbiased std; MixGRPO: weights normalised to one
    a, b = torch.tensor([[1.0, 2.0, 6.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    za, zb = (a - 3) / (a.std() + 1e-8), (b - 1 / 3) / (b.std() + 1e-8)
    assert torch.allclose(DanceGRPO().sample_advantages({"a": a, "b": b}, {"a": 1.0, "b": 3.0}), za + 3 * zb, atol=1e-6)
    mix = MixGRPO().sample_advantages({"a": a, "b": b}, {"a": 1.0, "b": 3.0})
    assert torch.allclose(mix, 0.25 * za + 0.75 * zb, atol=1e-6)
    assert DanceGRPO(DanceGRPOConfig(adv_clip_max=0.5)).sample_advantages({"a": a}, {"a": 1.0}).abs().max() == 0.5


def test_kl_is_zero_with_zero_gradient_at_the_reference():
    sh = shared(num_steps=6)
    flow = FlowGRPO(FlowGRPOConfig(beta=0.04))
    policy, cond, ro = rollout(flow, sh)
    flow.setup(policy)
    tr, rows = ro.transitions, torch.arange(6)
    c = cond[tr.prompt[rows].tolist()]
    kl = flow.extra_loss(policy, tr, rows, policy(tr.x[rows], tr.sigma[rows], c), c).sum()
    assert kl.item() == 0.0
    grads = torch.autograd.grad(kl, [p for p in policy.parameters()], allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    # after moving the policy the KL is positive
    with torch.no_grad():
        next(policy.parameters()).add_(0.1)
    assert flow.extra_loss(policy, tr, rows, policy(tr.x[rows], tr.sigma[rows], c), c).sum() > 0


ALL = list(METHODS)
"""Every registered method: a method added later is held to the same invariants."""


def small(name):
    knobs = {"g2rpo": {"eta_step_list": (0, 2)}, "dancegrpo": {"gradient_accumulation_steps": 4, "world_size": 1},
             "mixgrpo": {"gradient_accumulation_steps": 4, "world_size": 1}, "flowgrpo": {"beta": 0.04}}
    m = make_method(name, knobs)
    m.optim = no_decay(1e-4)
    return m


@pytest.mark.parametrize("name", ALL)
def test_ratio_is_one_before_the_first_update_and_cost_matches_calls(name):
    sh = shared()
    m = small(name)
    t = trainer(m, sh)
    metrics = t.step()
    assert metrics["first_ratio_max_dev"] < 1e-6
    cost, P = m.cost(sh), sh.prompts_per_round
    assert metrics["nfe_rollout"] == P * cost.nfe_rollout
    assert metrics["nfe_train"] == P * cost.nfe_train  # random rewards here: no zero advantages to drop
    assert metrics["images_scored"] == P * cost.images_scored
    assert metrics["nfe_reference"] == P * cost.nfe_reference
    if name == "flowgrpo":
        assert cost.nfe_reference > 0
        t.step()  # counts are per round, not cumulative
        assert t.step()["nfe_reference"] == P * cost.nfe_reference


@pytest.mark.parametrize("name", [n for n in ALL if METHODS[n].family != "g2rpo"])  # G2RPO: test_g2rpo
def test_batched_equals_one_at_a_time(name):
    _, _, a = rollout(small(name), shared())
    _, _, b = rollout(small(name), shared(max_batch=1))
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert torch.allclose(a.transitions.log_prob_old, b.transitions.log_prob_old, atol=1e-5)


def test_same_seed_same_prompts_and_noise_across_methods():
    sh = shared()
    seen = {}
    for name in ALL:
        t = trainer(small(name), sh)
        calls = []
        orig = t.method.rollout

        def spy(policy, cond, init_noise, *a, _orig=orig, _calls=calls, **k):
            _calls.append(init_noise.clone())
            return _orig(policy, cond, init_noise, *a, **k)

        t.method.rollout = spy
        prompts = []
        enc = t.text.__call__
        t.text = lambda p, _enc=enc, _prompts=prompts: (_prompts.append(list(p)), _enc(p))[1]
        t.step()
        seen[name] = (prompts[0], calls[0])
    ref_prompts, ref_noise = seen["g2rpo"]
    for name, (p, noise) in seen.items():
        assert p == ref_prompts and torch.equal(noise, ref_noise), name
    assert torch.equal(ref_noise, initial_noise(sh, 0, (3, 8, 8)))


def test_runs_with_different_shared_settings_are_refused():
    a, b = shared(), shared()
    assert assert_same_shared({"g2rpo": a, "flowgrpo": b}) == a.comparable_digest()
    with pytest.raises(ValueError, match="num_generations"):
        assert_same_shared({"g2rpo": a, "flowgrpo": dataclasses.replace(b, num_generations=5)})


def test_registry_names_and_official_defaults():
    assert make_method("g2rpo-wo-mgai", {"g2rpo": {"granular_list": (1, 2, 3)}}).cfg.granular_list == (1,)
    assert make_method("g2rpo").cfg == G2RPOConfig()
    assert isinstance(make_method("g2rpo"), G2RPO)
    assert make_method("dancegrpo").cfg.eta == 0.3 and make_method("flowgrpo").cfg.noise_level == 0.7
    with pytest.raises(KeyError):
        make_method("ppo")
