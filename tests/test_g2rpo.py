"""G2RPO against its spec (algorithms.md §3) and the invariants (§8)."""
import itertools

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from g2rpo import advantages as A
from g2rpo.config import SharedConfig
from g2rpo.granular import G2RPO, G2RPOConfig
from g2rpo.loop import initial_noise
from g2rpo.loss import ppo_clip_loss
from g2rpo.method import Layout
from g2rpo.models.flux import tiny_flux_policy
from g2rpo.models.text import HashTextEncoder
from g2rpo.sampling import complete_many, complete_one, ode_sample, shared_evaluations
from g2rpo.schedules import coarse_completion_grid
from g2rpo.sde import sde_step
from tests.helpers import no_decay, rollout, shared, trainer


def method(**kw):
    return G2RPO(G2RPOConfig(**({"eta_step_list": (0, 2, 3), "granular_list": (1, 2, 3)} | kw)))


def train_log_prob(policy, ro, cond):
    """Training-side log-prob of every stored transition, recomputed the way the loop does (per k)."""
    tr = ro.transitions
    out = torch.empty_like(tr.log_prob_old)
    for k in tr.k.unique():
        rows = torch.nonzero(tr.k == k).squeeze(1)
        v = policy(tr.x[rows], tr.sigma[rows], cond[tr.prompt[rows].tolist()])
        n, shape = tr.n, tr.x.shape[1:]
        rep = lambda t: t.repeat_interleave(n, 0)  # noqa: E731
        o = sde_step(rep(tr.x[rows]), rep(v), rep(tr.sigma[rows]), rep(tr.sigma_next[rows]), rep(tr.g[rows]),
                     next_sample=tr.x_next[rows].reshape(-1, *shape))
        out[rows] = o.log_prob.view(len(rows), n)
    return out


def test_ratio_is_exactly_one_before_the_first_update():
    sh = shared()
    policy, cond, ro = rollout(method(), sh)
    logp = train_log_prob(policy, ro, cond)
    assert torch.equal(logp, ro.transitions.log_prob_old)
    t = trainer(method(), sh)
    assert t.step()["first_ratio_max_dev"] == 0.0


@pytest.mark.parametrize("anchor_dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("end", ["official", "zero"])
def test_batched_rollout_equals_one_sample_at_a_time(end, anchor_dtype):
    sh = shared(max_batch=5)
    _, _, fast = rollout(method(completion_end=end, anchor_dtype=anchor_dtype), sh)
    _, _, ref = rollout(method(completion_end=end, anchor_dtype=anchor_dtype, rollout_mode="reference"), sh)
    assert torch.allclose(fast.images, ref.images, atol=1e-5)
    assert torch.allclose(fast.extra_images["ode"], ref.extra_images["ode"], atol=1e-5)
    a, b = fast.transitions, ref.transitions
    for f in ["x", "x_next", "log_prob_old", "sigma", "sigma_next", "g"]:  # bf16: fp32 anchors ~1e-7 apart round alike
        assert torch.allclose(getattr(a, f), getattr(b, f), atol=1e-5), f
    assert torch.equal(a.k, b.k) and torch.equal(a.prompt, b.prompt)


def test_members_share_the_anchor_until_their_k():
    sh = shared()
    policy, cond, ro = rollout(method(), sh)
    tr, sigmas = ro.transitions, sh.sigmas()
    x_T = initial_noise(sh, 0, policy.latent_shape)[:, 0]
    _, xs, _ = ode_sample(policy, x_T, sigmas, cond)
    for r in range(len(tr.k)):
        k, p = int(tr.k[r]), int(tr.prompt[r])
        assert torch.equal(tr.x[r], xs[k, p])  # every member starts from the anchor latent x_k
        assert (tr.x_next[r] - xs[k + 1, p]).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # and is noised at k
        assert (tr.x_next[r][0] - tr.x_next[r][1]).abs().max() > 1e-3


def test_eta_zero_members_equal_the_anchor_and_anchor_is_plain_sampling():
    sh = shared()
    policy, cond, ro = rollout(method(eta=0.0, granular_list=(1,)), sh)
    lay = ro.layout
    P, nk, nl, G = lay.prompts, lay.steps, lay.granularities, lay.generations
    imgs = ro.images.view(P, nk, nl, G, *ro.images.shape[1:])
    ode = ro.extra_images["ode"]
    assert torch.allclose(imgs, ode[:, None, None, None].expand_as(imgs), atol=1e-6)
    # the anchor is the plain Euler sampler of diffusers on the same sigmas and noise
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sigmas = sh.sigmas()
    sched.set_timesteps(sigmas=sigmas[:-1].tolist())
    x = initial_noise(sh, 0, policy.latent_shape)[:, 0]
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            x = sched.step(policy(x, sigmas[i].expand(len(x)), cond), t, x, return_dict=False)[0]
    assert torch.allclose(policy.decode(x), ode, atol=1e-5)


def test_completion_takes_x0_hat_at_the_last_evaluated_point():
    policy, sh = tiny_flux_policy(0), shared(num_steps=16)
    cond = HashTextEncoder()(["a cat"])
    sigmas, x = sh.sigmas(), torch.randn(1, 3, 8, 8)
    grid = coarse_completion_grid(sigmas, 0, 3)  # sigma 1, 2, 5, 8, 11, 14: image = x0_hat at sigma_11
    with torch.no_grad():
        y = x.clone()
        for a, b in zip(grid[:-2], grid[1:-1]):
            y = y + (b - a) * policy(y, a.view(1), cond)
        expected = y - grid[-2] * policy(y, grid[-2].view(1), cond)
        got = complete_one(policy, x, grid, cond)
        many = complete_many(policy, torch.cat([x, x]), [grid, coarse_completion_grid(sigmas, 3, 1)], cond[[0, 0]])
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(many[:1], got, atol=1e-5)


def test_advantages_hand_computed():
    m = method(eta_step_list=(0,), granular_list=(1, 2), adv_clip_max=1.0)
    ro = type("R", (), {})()
    ro.layout = Layout(prompts=1, generations=3, steps=1, granularities=2)
    ro.transitions = type("T", (), {})()
    # reward a over (lambda=1: 1,2,3), (lambda=2: 0,0,3); reward b constant -> zero advantage
    rewards = {"a": torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 3.0]), "b": torch.full((6,), 7.0)}
    m.advantages(ro, rewards, {"a": 1.0, "b": 1.0})
    l1 = torch.tensor([-1.0, 0.0, 1.0])
    l2 = torch.tensor([-1.0, -1.0, 2.0]) / torch.tensor(3.0).sqrt()  # mean 1, unbiased std sqrt(3)
    assert torch.allclose(ro.transitions.adv, (l1 + l2).clamp(-1, 1).view(1, 3), atol=1e-6)
    assert torch.allclose(A.group_zscore(torch.tensor([1.0, 2.0, 3.0, 4.0])),
                          torch.tensor([-1.161895, -0.387298, 0.387298, 1.161895]), atol=1e-6)


def test_ppo_clip_loss_hand_computed():
    logp_old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.0]))
    adv = torch.tensor([2.0, -1.0, 2.0, 3.0])
    loss, ratio = ppo_clip_loss(logp, logp_old, adv, 0.2)
    assert torch.allclose(ratio, torch.tensor([1.5, 1.5, 0.5, 1.0]))
    assert torch.allclose(loss, torch.tensor([-2.4, 1.5, -1.0, -3.0]), atol=1e-6)


def test_wo_mgai_is_lambda_one():
    sh = shared()
    _, _, full = rollout(method(granular_list=(1, 2)), sh)
    _, _, wo = rollout(method(granular_list=(1,)), sh)
    lay = full.layout
    P, nk, nl, G = lay.prompts, lay.steps, lay.granularities, lay.generations
    img = full.images.view(P, nk, nl, G, -1)
    assert torch.allclose(img[:, :, 0], wo.images.view(P, nk, G, -1), atol=1e-6)
    assert torch.equal(full.transitions.log_prob_old, wo.transitions.log_prob_old)


@pytest.mark.parametrize("mode,end,update", list(itertools.product(["batched", "reference"], ["official", "zero"], ["per_step", "accumulate"])))
def test_cost_accounting_matches_counted_calls(mode, end, update):
    sh = shared(num_steps=7)
    m = method(rollout_mode=mode, completion_end=end, update=update, eta_step_list=(0, 1, 4))
    t = trainer(m, sh)
    metrics = t.step()
    cost, P = m.cost(sh), sh.prompts_per_round
    assert metrics["nfe_rollout"] == P * cost.nfe_rollout
    assert metrics["nfe_train"] == P * cost.nfe_train
    assert metrics["images_scored"] == P * cost.images_scored
    assert metrics["optimizer_steps"] == (3 if update == "per_step" else 1)


def test_paper_cost():
    # algorithms.md §3: N anchor + G * sum_k (1 + sum_lambda ceil((N-1-k)/lambda)) for the official loop
    sh = SharedConfig(num_steps=16, num_generations=12)
    ref = G2RPO(G2RPOConfig(granular_list=(1, 2, 3), rollout_mode="reference")).cost(sh)
    expected = 16 + 12 * sum(1 + sum(-(-(15 - k) // lam) for lam in (1, 2, 3)) for k in range(8))
    assert ref.nfe_rollout == expected and ref.nfe_train == 8 and ref.images_scored == 12 * 8 * 3 + 1
    separate = G2RPO(G2RPOConfig(granular_list=(1, 2, 3), shared_prefix=False)).cost(sh)
    assert separate.nfe_rollout == expected - 12 * 8  # the SDE steps reuse the anchor's velocities
    # and every k's three completions (all of >= 2 evaluations here) share their first two: 2 * (3 - 1) fewer each
    assert G2RPO(G2RPOConfig(granular_list=(1, 2, 3))).cost(sh).nfe_rollout == expected - 12 * 8 - 12 * 8 * 4


def test_shared_evaluations_hand_computed():
    s = torch.linspace(1, 0, 7)
    grids = [s[[1, 2, 3, 4, 5, 6]], s[[1, 2, 4, 6]], s[[1, 2, 5]], s[[1, 2, 3]], s[[5, 6]]]
    reps = shared_evaluations(grids, torch.tensor([0, 0, 0, 1, 0]))
    assert [r.tolist() for r in reps] == [[0, 0, 0, 3, 4],  # same source, same first point (row 3: another source)
                                          [0, 0, 0, 3, 4],  # ... and the same second; row 4 has finished (itself)
                                          [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]  # apart from here


@pytest.mark.parametrize("lams", [(1, 2), (1, 2, 3)])
def test_shared_prefix_gives_the_same_samples_with_fewer_evaluations(lams):
    sh = shared(num_steps=8)
    runs = {}
    for share in (False, True):
        m = method(granular_list=lams, eta_step_list=(0, 3, 6), shared_prefix=share)
        policy, _, ro = rollout(m, sh)
        runs[share] = ro, policy.calls["rollout"], m.cost(sh).nfe_rollout
    (a, na, ca), (b, nb, cb) = runs[False], runs[True]
    assert torch.allclose(a.images, b.images, atol=1e-6) and torch.equal(a.transitions.x_next, b.transitions.x_next)
    P, G = sh.prompts_per_round, sh.num_generations
    assert (na, nb) == (P * ca, P * cb)
    # k = 0, 3: two shared evaluations per extra granularity; k = N-2 = 6: one evaluation, shared by all
    assert na - nb == P * G * (2 * 2 + 1) * (len(lams) - 1)


def test_one_round_changes_every_parameter_and_grads_reach_only_trained_steps():
    sh = shared(rewards={"brightness": 1.0, "redness": 0.5})
    m = method(optim=no_decay())
    t = trainer(m, sh)
    before = {n: p.detach().clone() for n, p in t.policy.named_parameters()}
    t.policy.log_calls = True
    t.step()
    unchanged = [n for n, p in t.policy.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged
    sigmas = sh.sigmas()
    trained = [s for grad, s in t.policy.call_log if grad]
    assert len(trained) == 3  # one forward per k, batched over prompts
    for s, k in zip(trained, m.cfg.eta_step_list):
        assert torch.equal(s, sigmas[k].expand(sh.prompts_per_round))


def test_invalid_configs_are_refused():
    sh = shared()
    for bad in [dict(eta_step_list=(0, 5)), dict(eta_step_list=()), dict(granular_list=(0,)), dict(eta_step_list=(1, 1))]:
        with pytest.raises(ValueError):
            rollout(method(**bad), sh)
    with pytest.raises(ValueError):
        rollout(method(), shared(num_generations=1))
