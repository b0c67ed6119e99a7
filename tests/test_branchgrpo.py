"""BranchGRPO: tree rollouts off one x_T, per-depth advantages of the leaves' mean reward, depth and width pruning."""

import pytest
import torch

from baselines.branchgrpo import (BranchGRPO, active_pruning_depths, default_split_points,
                                  depth_advantages, depth_zscore, node_rewards, prune_now, tree_counts, width_keep)
from baselines.dancegrpo import DanceGRPO, DanceGRPOConfig
from g2rpo.loop import PromptNoise, initial_noise
from g2rpo.models.text import HashTextEncoder
from g2rpo.registry import METHODS, make_method
from g2rpo.sampling import ode_sample
from g2rpo.sde import sde_step
from tests.helpers import PROMPTS, configured, rollout, shared, trainer


def bg(**kw):
    return configured(BranchGRPO, **kw)


def test_registered_in_its_own_family_with_the_official_defaults():
    e = METHODS["branchgrpo"]
    assert e.method is BranchGRPO and e.family == "branchgrpo" and not e.default and 35 <= e.order <= 90
    c = make_method("branchgrpo").cfg
    assert (c.eta, c.tree_split_noise_scale, c.clip_range, c.adv_clip_max, c.optim.lr, c.optim.weight_decay) == (
        0.3, 4.0, 1e-3, 5.0, 1e-5, 1e-4)
    assert (c.gradient_accumulation_steps, c.world_size, c.width_pruning_mode, c.depth_pruning) == (12, 8, 0, ())


def test_tree_shape_closed_forms():
    assert default_split_points(20, 16) == (0, 3, 6, 9)  # the official script's
    assert default_split_points(10, 8) == (0, 1, 3) and default_split_points(16, 12) == (0, 2)
    assert default_split_points(6, 3) == () and default_split_points(6, 16) == (0, 1, 2, 3)
    assert default_split_points(20, 16, branch_factor=1) == ()
    m = tree_counts((0, 3, 6, 9), 20, 1, 2)
    assert m == [1] + [2] * 3 + [4] * 3 + [8] * 3 + [16] * 11
    assert sum(m[:-1]) == 203 and sum(m[1:]) == 218  # rollout forwards and edges of the official tree
    assert tree_counts((), 5, 3, 2) == [3] * 6 and tree_counts((0, 2), 4, 3, 3) == [3, 9, 9, 27, 27]


def test_node_rewards_and_per_depth_zscores():
    r = torch.tensor([[1.0, 3.0, 2.0, 6.0]])
    assert torch.equal(node_rewards(r, 2), torch.tensor([[2.0, 4.0]])) and torch.equal(node_rewards(r, 1), r.mean(1, True))
    z = depth_zscore(torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(z, torch.tensor([[-1.0, 1.0]]) / (2**0.5 + 1e-8 / 2**0.5), atol=1e-6)  # std = sqrt(2)
    assert torch.equal(depth_zscore(torch.tensor([[5.0]])), torch.zeros(1, 1))  # one node: 0
    assert torch.equal(depth_zscore(torch.tensor([[1.0, 1.0 + 1e-7]])), torch.zeros(1, 2))  # std < 1e-6: 0
    nan = depth_zscore(torch.tensor([[1.0, float("nan"), 3.0]]))
    assert nan[0, 1] == 0 and torch.allclose(nan[0, [0, 2]], torch.tensor([-1.0, 1.0]) / 2**0.5, atol=1e-6)
    adv = depth_advantages(r, [1, 2, 4])
    assert adv[0].eq(0).all() and torch.allclose(adv[1], z, atol=1e-6)
    assert torch.allclose(adv[2], (r - r.mean()) / (r.std() + 1e-8), atol=1e-6)


def test_pruning_rules():
    assert active_pruning_depths((15, 16, 17, 18), 1, True, 30, 9) == {15, 16, 17, 18}
    assert active_pruning_depths((15, 16, 17, 18), 65, True, 30, 9) == {13, 14, 15, 16}  # slid twice
    assert active_pruning_depths((15, 16), 10**6, True, 30, 9) == {9, 10}  # stops at the last split
    assert active_pruning_depths((15, 16), 10**6, False, 30, 9) == {15, 16} and active_pruning_depths((), 1, True, 1, 0) == set()
    assert prune_now(150, 300, 0.5) and not prune_now(151, 300, 0.5) and prune_now(300, 300, 1.0)
    adv = [0.5, -1.0, 2.0, 0.0, 1.0, -2.0]
    assert width_keep(adv, 1, 0.5, [0, 0, 0, 1, 1, 1]) == [False, False, True, False, True, False]
    assert width_keep(adv, 2, 0.5) == [False, True, True, False, False, True]  # k = 3: the best, the 2 worst
    assert width_keep(adv, 2, 0.1) == [False, False, True, False, False, True]  # at least 2
    assert width_keep([0.0, 0.0, 0.0], 1, 0.5, [0, 0, 0]) == [True, False, False]  # ties: the earlier first


def test_branch_factor_one_is_dancegrpo_s_chain():
    """b = 1: G chains from the shared x_T, the same noise, steps and image as DanceGRPO's rollout."""
    sh = shared()
    policy, _, d = rollout(DanceGRPO(DanceGRPOConfig()), sh)
    _, _, t = rollout(bg(branch_factor=1), sh, policy)
    P, G, N = 2, 3, 6
    assert torch.allclose(t.images, d.images, atol=1e-6)
    x_next = t.transitions.x_next.view(P, N, G, *policy.latent_shape)
    assert torch.allclose(x_next.transpose(0, 1), d.latents[1:], atol=1e-6)
    lp = t.transitions.log_prob_old.view(P, N, G)[:, : N - 1]  # DanceGRPO stores all but the last
    assert torch.allclose(lp.permute(0, 2, 1).reshape(-1, 1), d.transitions.log_prob_old, atol=1e-6)


def test_split_children_share_the_parent_and_score_with_the_unscaled_std():
    sh = shared(num_generations=4)
    policy, cond, ro = rollout(bg(), sh)  # splits (0, 1): m = 1, 2, 4, 4, 4, 4, 4
    tr, shape = ro.transitions, policy.latent_shape
    P, E = 2, 2 + 4 * 5
    assert tr.k.tolist() == ([0] * 2 + [1] * 4 + sum(([i] * 4 for i in range(2, 6)), [])) * P
    assert len(ro.images) == P * 4 and ro.layout.steps == E
    x_T = initial_noise(sh, 0, shape)[:, 0]
    assert torch.equal(tr.x[0], x_T[0]) and torch.equal(tr.x[1], x_T[0])  # step 0: both children of the root
    assert torch.equal(tr.x[2], tr.x_next[0, 0]) and torch.equal(tr.x[3], tr.x_next[0, 0])  # step 1's parents
    assert torch.equal(tr.x[4], tr.x_next[1, 0]) and torch.equal(tr.x[6], tr.x_next[2, 0])  # step 2: chains
    # by hand: step 0 of prompt 0 with the first noise draw scaled by 4, scored with std eta sqrt(dt)
    z = PromptNoise(sh.seed, "sde", 0, range(P))((6, 4, *shape), dim=1)
    sig = sh.sigmas()
    v = policy(x_T[:1].expand(2, *shape), sig[0].expand(2), cond[[0, 0]])
    out = sde_step(x_T[:1].expand(2, *shape), v, sig[0], sig[1], 0.3, noise=4 * z[0, 0, :2])
    assert torch.allclose(tr.x_next[:2, 0], out.sample, atol=1e-5)
    assert torch.allclose(tr.log_prob_old[:2, 0], out.log_prob, atol=1e-5)
    # a non-split step is unscaled
    out = sde_step(tr.x[6:10], policy(tr.x[6:10], sig[2].expand(4), cond[[0] * 4]), sig[2], sig[3], 0.3,
                   noise=z[2, 0])
    assert torch.allclose(tr.x_next[6:10, 0], out.sample, atol=1e-5)


def test_zero_noise_is_the_ode_sampler():
    sh = shared(num_generations=4)
    policy, cond, ro = rollout(bg(eta=0.0), sh)
    x0, _, _ = ode_sample(policy, initial_noise(sh, 0, policy.latent_shape)[:, 0], sh.sigmas(), cond)
    ode = policy.decode(x0).repeat_interleave(4, 0)
    assert torch.allclose(ro.images, ode, atol=1e-5)


def test_batched_equals_unbatched_and_two_prompts_equal_each_alone():
    sh = shared(num_generations=4)
    policy, _, a = rollout(bg(), sh)
    _, _, b = rollout(bg(), shared(num_generations=4, max_batch=1), policy)
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert torch.allclose(a.transitions.log_prob_old, b.transitions.log_prob_old, atol=1e-5)
    one = shared(num_generations=4, prompts_per_round=1)
    with torch.no_grad():
        ro = bg().rollout(policy, HashTextEncoder()(PROMPTS[1:2]), initial_noise(sh, 0, policy.latent_shape, [1]),
                          PromptNoise(sh.seed, "sde", 0, [1]), one)
    half = len(a.transitions.k) // 2
    assert torch.allclose(ro.transitions.x_next, a.transitions.x_next[half:], atol=1e-6)
    assert torch.allclose(ro.images, a.images[4:], atol=1e-5)


def test_edge_advantages_are_their_child_s_depth_zscore():
    sh = shared(num_generations=4)
    m = bg()
    _, _, ro = rollout(m, sh)
    r = torch.randn(8, generator=torch.Generator().manual_seed(0))
    m.advantages(ro, {"brightness": r}, {"brightness": 1.0})
    adv = ro.transitions.adv.view(2, 22)
    rr = r.view(2, 4)
    pair = torch.stack([rr[:, :2].mean(1), rr[:, 2:].mean(1)], 1)
    z2 = (pair - pair.mean(1, True)) / (pair.std(1, keepdim=True) + 1e-8)
    z4 = (rr - rr.mean(1, True)) / (rr.std(1, keepdim=True) + 1e-8)
    assert torch.allclose(adv[:, :2], z2, atol=1e-5)
    for i in range(5):  # steps 1..5: the leaves' own depth z-scores
        assert torch.allclose(adv[:, 2 + 4 * i : 6 + 4 * i], z4, atol=1e-5)


def test_optimizer_steps_deal_edges_per_gpu_block():
    sh = shared(num_generations=4, prompts_per_round=2)
    m = bg(world_size=2, gradient_accumulation_steps=5)
    _, _, ro = rollout(m, sh)
    m.advantages(ro, {"brightness": torch.randn(8)}, {"brightness": 1.0})
    groups = m.update_groups(ro, torch.Generator().manual_seed(0))
    assert len(groups) == 5 == m.optimizer_steps(sh)  # ceil(22 / 5) per block
    for g in groups[:-1]:
        assert (ro.transitions.prompt[g] == 0).sum() == 5 and (ro.transitions.prompt[g] == 1).sum() == 5
    assert sorted(torch.cat(groups).tolist()) == list(range(44))
    assert m.loss_weight(ro.transitions, groups[0]).eq(1 / 22).all()
    assert bg(tree_loss_norm=False).loss_weight(ro.transitions, groups[0]) is None


@pytest.mark.parametrize("knobs", [{}, {"depth_pruning": (4, 5)}, {"width_pruning_mode": 1},
                                   {"width_pruning_mode": 2, "depth_pruning": (6,)}])
def test_cost_matches_a_round(knobs):
    sh = shared(num_generations=4)
    m = bg(**knobs)
    t = trainer(m, sh)
    metrics = t.step()
    c, P = m.cost(sh), sh.prompts_per_round
    assert metrics["first_ratio_max_dev"] < 1e-6
    assert metrics["nfe_rollout"] == P * c.nfe_rollout == P * (1 + 2 + 4 * 4)
    assert metrics["nfe_train"] == P * c.nfe_train and metrics["images_scored"] == P * c.images_scored == P * 4
    unpruned = 2 + 4 * 5
    expected = {(): unpruned, ("depth_pruning",): unpruned - 8, ("width_pruning_mode",): 2 + 4 + 4 * 2,
                ("depth_pruning", "width_pruning_mode"): 2 + 4 + 12 // 2}
    assert c.nfe_train == expected[tuple(sorted(knobs))] and c.nfe_rollout_official is None
    bad = [{"tree_split_points": (0, 1, 2)}, {"tree_split_points": (1, 0)}, {"tree_split_points": (6,)},
           {"depth_pruning": (0,)}, {"width_pruning_mode": 3}, {"eta": 0.0}, {"branch_factor": 0}]
    for k in bad:
        with pytest.raises(ValueError):
            bg(**k).validate(sh)


@pytest.mark.parametrize("preset", ["paper", "pocket"])
def test_cost_per_prompt_is_the_closed_form(preset):
    """pocket (N 10, G 8): one tree split at 0, 1, 3; paper (N 16, G 12): three trees split at 0, 2 (the dry run shows
    these: tests/test_registry.py checks every method's dry run against cost())."""
    from g2rpo.presets import PRESETS

    p = PRESETS[preset]
    c = make_method("branchgrpo", p.knobs).cost(p.shared)
    if preset == "pocket":
        assert (c.nfe_rollout, c.nfe_train, c.images_scored) == (1 + 2 + 4 * 2 + 8 * 6, 2 + 4 * 2 + 8 * 7, 8)
    else:
        assert (c.nfe_rollout, c.nfe_train, c.images_scored) == (3 + 6 * 2 + 12 * 13, 6 * 2 + 12 * 14, 12)
