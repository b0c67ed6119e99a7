"""TempFlow-GRPO: seed groups branching once off ODE anchors at every step, noise-aware weights through loss_weight."""

import pytest
import torch

from baselines.tempflowgrpo import TempFlowGRPO, noise_aware_weights, transition_std
from g2rpo.loop import PromptNoise, initial_noise
from g2rpo.models.text import HashTextEncoder
from g2rpo.registry import METHODS, make_method
from g2rpo.sampling import ode_sample
from g2rpo.sde import flow_sde_g
from tests.helpers import PROMPTS, configured, rollout, run_module, shared, trainer



def tf(**kw):
    return configured(TempFlowGRPO, **kw)


def test_registered_in_its_own_family():
    e = METHODS["tempflowgrpo"]
    assert e.method is TempFlowGRPO and e.family == "tempflowgrpo" and not e.default and 35 <= e.order <= 90
    m = make_method("tempflowgrpo", {})
    assert m.seeds(24) == 4 and m.seeds(12) == 4 and m.seeds(8) == 4 and m.seeds(3) == 1 and m.seeds(6) == 3


def test_noise_aware_weights_closed_form():
    sig = shared(num_steps=10).sigmas()
    a, ks = 0.7, torch.arange(9)
    std = flow_sde_g(sig[ks], float(sig[1]), a) * torch.sqrt(sig[ks] - sig[ks + 1])
    w = noise_aware_weights(std)
    assert torch.allclose(w, std / std.mean(), atol=1e-6) and abs(w.mean().item() - 1) < 1e-6
    assert torch.allclose(noise_aware_weights(torch.full((5,), 0.3)), torch.ones(5))
    # through the hook: each row's weight is its step's, from the rollout's stored g and sigmas
    sh = shared(num_steps=6, num_generations=4)
    m = tf()
    _, _, ro = rollout(m, sh)
    tr = ro.transitions
    rows = torch.arange(len(tr.k))
    w = m.loss_weight(tr, rows)
    sig = sh.sigmas()
    ks = torch.arange(5)
    std = flow_sde_g(sig[ks], float(sig[1]), 0.7) * torch.sqrt(sig[ks] - sig[ks + 1])
    assert w.shape == (len(rows), 1) and torch.allclose(w[:, 0], (std / std.mean())[tr.k], atol=1e-5)
    assert torch.allclose(transition_std(tr), std[tr.k], atol=1e-6)
    assert tf(weighting="none").loss_weight(tr, rows) is None


def test_rows_images_and_branching_steps():
    sh = shared(num_steps=6, num_generations=4, prompts_per_round=2)
    m = tf()
    _, _, ro = rollout(m, sh)
    P, N, K, M = 2, 2, 2, 5
    tr = ro.transitions
    assert tr.k.tolist() == list(range(M)) * (P * N) and tr.prompt.tolist() == [p for p in range(P) for _ in range(N * M)]
    assert tr.x_next.shape[1] == K and len(ro.images) == P * N * M * K and ro.extra_images["ode"].shape[0] == P
    assert ro.image_prompt.tolist() == [p for p in range(P) for _ in range(N * M * K)]
    _, _, r2 = rollout(tf(branch_steps=(1, 3)), sh)
    assert r2.transitions.k.tolist() == [1, 3] * (P * N)
    for bad in ({"branch_steps": (5,)}, {"num_seeds": 3}, {"num_seeds": 4}, {"adv_group": "x"}, {"weighting": "x"},
                {"optimizer_steps_per_round": 0}):
        with pytest.raises(ValueError):
            tf(**bad).validate(sh)


def test_noise_level_zero_is_the_ode_sampler():
    sh = shared(num_steps=6, num_generations=4)
    policy, cond, ro = rollout(tf(noise_level=0.0), sh)
    P, N, K, M = 2, 2, 2, 5
    x_T = initial_noise(sh, 0, policy.latent_shape)[:, ::K].reshape(P * N, *policy.latent_shape)
    x0, _, _ = ode_sample(policy, x_T, sh.sigmas(), cond[torch.arange(P).repeat_interleave(N).tolist()])
    ode = policy.decode(x0).view(P, N, 1, 1, *ro.images.shape[1:]).expand(P, N, M, K, *ro.images.shape[1:])
    assert torch.allclose(ro.images, ode.reshape(ro.images.shape), atol=1e-5)
    assert torch.allclose(ro.extra_images["ode"], policy.decode(x0)[::N], atol=1e-5)


def test_branch_noise_is_per_prompt_and_reproducible():
    sh = shared(num_steps=6, num_generations=4, prompts_per_round=2)
    m = tf()
    policy, _, a = rollout(m, sh)
    b = rollout(m, sh, policy)[2]
    assert torch.equal(a.transitions.x_next, b.transitions.x_next)
    c = rollout(m, sh, policy, round_idx=1)[2]
    assert not torch.allclose(a.transitions.x_next, c.transitions.x_next)
    # prompt 1 alone (another process's slice) draws the same branches
    one = shared(num_steps=6, num_generations=4, prompts_per_round=1)
    with torch.no_grad():
        ro = m.rollout(policy, HashTextEncoder()(PROMPTS[1:2]), initial_noise(sh, 0, policy.latent_shape, [1]),
                       PromptNoise(sh.seed, "sde", 0, [1]), one)
    half = len(a.transitions.k) // 2
    assert torch.allclose(ro.transitions.x_next, a.transitions.x_next[half:], atol=1e-6)
    assert torch.allclose(ro.images, a.images[len(a.images) // 2 :], atol=1e-5)


@pytest.mark.parametrize("group", ["seed", "prompt"])
def test_advantages_per_step(group):
    sh = shared(num_steps=6, num_generations=4)
    m = tf(adv_group=group)
    _, _, ro = rollout(m, sh)
    P, N, M, K = 2, 2, 5, 2
    r = torch.randn(P * N * M * K, generator=torch.Generator().manual_seed(0))
    m.advantages(ro, {"brightness": r}, {"brightness": 1.0})
    adv = ro.transitions.adv.view(P, N, M, K)
    rr = r.view(P, N, M, K)
    if group == "seed":
        ref = (rr - rr.mean(-1, keepdim=True)) / (rr.std(-1, keepdim=True) + 1e-8)
    else:
        mean, std = rr.mean((1, 3), keepdim=True), rr.transpose(1, 2).reshape(P, M, N * K).std(-1)
        ref = (rr - mean) / (std.view(P, 1, M, 1) + 1e-8)
    assert torch.allclose(adv, ref.clamp(-5, 5), atol=1e-5)
    groups = m.update_groups(ro, torch.Generator().manual_seed(0))
    assert len(groups) == 2 == m.optimizer_steps(sh) and sorted(torch.cat(groups).tolist()) == list(range(P * N * M))


def test_batched_equals_unbatched_and_cost_matches_a_round():
    _, _, a = rollout(tf(), shared(num_generations=4))
    _, _, b = rollout(tf(), shared(num_generations=4, max_batch=1))
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert torch.allclose(a.transitions.log_prob_old, b.transitions.log_prob_old, atol=1e-5)
    sh = shared(num_generations=4)
    m = tf()
    metrics = trainer(m, sh).step()
    c, P = m.cost(sh), sh.prompts_per_round
    assert metrics["first_ratio_max_dev"] < 1e-6
    assert (c.nfe_rollout, c.nfe_train, c.images_scored) == (2 * (6 + 2 * 15), 2 * 5, 2 * 5 * 2 + 1)
    assert metrics["nfe_rollout"] == P * c.nfe_rollout and metrics["nfe_train"] == P * c.nfe_train
    assert metrics["images_scored"] == P * c.images_scored and c.nfe_rollout_official is None


def test_a_constant_weight_scales_the_gradient():
    """loss_weight multiplies the per-pair loss before the division by the trained count: weight 2 everywhere gives
    twice the unweighted gradient of the (single) optimizer step."""
    sh = shared(num_generations=4)
    grads = []
    for w in (None, 2.0):
        m = tf(weighting="none", optimizer_steps_per_round=1)
        m.cfg.optim.max_grad_norm = 1e9
        if w is not None:
            m.loss_weight = lambda tr, rows, w=w: torch.full((len(rows), 1), w)
        t = trainer(m, sh)
        t.step()
        grads.append(torch.cat([p.grad.reshape(-1) for p in t.policy.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0 and torch.allclose(grads[1], 2 * grads[0], rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("preset", ["paper", "pocket"])
def test_cost_per_prompt_is_the_closed_form(preset):
    """N anchors of n steps and K completions from every branching step k (n - 1 - k evaluations each), one trained
    forward per (seed, k); the dry run shows it (tests/test_registry.py checks every method's dry run against cost())."""
    from g2rpo.presets import PRESETS

    p = PRESETS[preset]
    c = make_method("tempflowgrpo", p.knobs).cost(p.shared)
    G, n = p.shared.num_generations, p.shared.num_steps
    N, K = 4, G // 4
    assert c.nfe_rollout == N * (n + K * (n - 1) * n // 2) and c.nfe_train == N * (n - 1)


def test_train_smoke_runs():
    r = run_module("benchmarks.train", "--method", "tempflowgrpo", "--preset", "smoke", "--rounds", "2")
    assert r.returncode == 0, r.stderr[-2000:]
