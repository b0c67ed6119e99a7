"""Flow-GRPO-Fast: Flow-SDE only inside a random window per sample, ODE elsewhere; only the window trains."""

import pytest
import torch

from baselines.flowgrpo import FlowGRPO
from baselines.flowgrpo_fast import FlowGRPOFast, uniform_ints
from baselines.trajectory import window_g
from g2rpo.loop import PromptNoise, initial_noise
from g2rpo.models.text import HashTextEncoder
from g2rpo.registry import METHODS, make_method
from g2rpo.sampling import ode_sample
from g2rpo.sde import flow_sde_g
from tests.helpers import PROMPTS, configured, rollout, run_module, shared, trainer



def fast(**kw):
    return configured(FlowGRPOFast, **kw)


def starts(ro, size):
    P, G, S = ro.layout.prompts, ro.layout.generations, ro.layout.steps
    assert S == size
    k = ro.transitions.k.view(P * G, S)
    assert torch.equal(k, k[:, :1] + torch.arange(S))  # consecutive steps
    return k[:, 0]


def test_registered_in_the_flowgrpo_family():
    e = METHODS["flowgrpo-fast"]
    assert e.method is FlowGRPOFast and e.family == "flowgrpo" and e.title == "Flow-GRPO-Fast"
    m = make_method("flowgrpo-fast", {"flowgrpo": {"beta": 0.04, "use_lora": False}}, lr=1e-5)
    assert isinstance(m, FlowGRPO) and m.cfg.beta == 0.04 and m.cfg.sde_window_size == 2 and m.optim.lr == 1e-5
    assert m.cfg.sde_window_range is None and m.window_range(10) == (0, 5) and m.window_range(16) == (0, 8)


def test_window_g_closed_form():
    sig = shared(num_steps=8).sigmas()
    full = flow_sde_g(sig[:-1], float(sig[1]), 0.7)
    g = window_g(sig, [2, 3], 0.7)
    assert torch.equal(g[[2, 3]], full[[2, 3]]) and torch.count_nonzero(g) == 2
    rows = window_g(sig, torch.tensor([[0, 1], [5, 6], [3, 4]]), 0.7)
    assert rows.shape == (8, 3)
    for b, w in enumerate([[0, 1], [5, 6], [3, 4]]):
        assert torch.equal(rows[:, b], window_g(sig, w, 0.7))
    assert torch.count_nonzero(window_g(sig, torch.zeros(0, dtype=torch.long), 0.7)) == 0


def test_uniform_ints_cover_the_range_inclusively():
    z = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    s = uniform_ints(z, 1, 4)
    assert s.min() == 1 and s.max() == 4
    counts = torch.bincount(s - 1, minlength=4).float() / len(s)
    assert (counts - 0.25).abs().max() < 0.02
    assert uniform_ints(torch.tensor([-40.0, 40.0]), 0, 3).tolist() == [0, 3]


def test_sde_inside_the_window_ode_elsewhere_and_only_the_window_is_stored():
    sh = shared(num_steps=10, num_generations=4)
    m = fast(sde_window_size=3)
    _, _, ro = rollout(m, sh)
    P, G, n = sh.prompts_per_round, sh.num_generations, sh.num_steps
    s = starts(ro, 3)
    assert s.min() >= 0 and s.max() <= 5 - 3  # randint(0, N//2 - size)
    tr = ro.transitions
    assert len(tr.k) == P * G * 3 and tr.x_next.shape[1] == 1
    assert (tr.g > 0).all() and torch.equal(tr.g, flow_sde_g(tr.sigma, float(sh.sigmas()[1]), 0.7))
    assert (tr.log_prob_old != 0).all()
    # the latents: each sample follows the ODE outside its window (x_{j+1} = Euler step of x_j)
    policy, cond, _ = rollout(m, sh)
    lat = ro.latents.reshape(n + 1, P * G, *ro.latents.shape[3:])
    sig = sh.sigmas()
    rows_cond = cond[torch.arange(P).repeat_interleave(G).tolist()]
    for b in range(P * G):
        for j in range(n):
            v = policy(lat[j, b : b + 1], sig[j].expand(1), rows_cond[[b]])
            euler = lat[j, b] + (sig[j + 1] - sig[j]) * v[0]
            inside = int(s[b]) <= j < int(s[b]) + 3
            assert (lat[j + 1, b] - euler).abs().max() > 1e-3 if inside else torch.allclose(lat[j + 1, b], euler, atol=1e-5)


def test_noise_level_zero_is_the_ode_sampler():
    sh = shared(num_steps=6)
    m = fast(noise_level=0.0)
    policy, cond, ro = rollout(m, sh)
    P, G = sh.prompts_per_round, sh.num_generations
    x_T = initial_noise(sh, 0, policy.latent_shape).reshape(P * G, *policy.latent_shape)
    x0, _, _ = ode_sample(policy, x_T, sh.sigmas(), cond[torch.arange(P).repeat_interleave(G).tolist()])
    assert torch.allclose(ro.images, policy.decode(x0), atol=1e-5)


def test_window_size_zero_is_sde_on_all_but_the_last_step():
    sh = shared(num_steps=6)
    _, _, ro = rollout(fast(sde_window_size=0), sh)
    tr, S = ro.transitions, ro.layout.steps
    assert S == 5 and tr.k.view(-1, 5)[0].tolist() == [0, 1, 2, 3, 4] and (tr.g > 0).all()
    assert fast(sde_window_size=0).cost(sh).nfe_train == 3 * 5


def test_window_draw_is_per_sample_reproducible_and_varies_over_rounds():
    sh = shared(num_steps=16, num_generations=6, prompts_per_round=2)
    m = fast(sde_window_size=2)
    s0 = starts(rollout(m, sh)[2], 2)
    assert torch.equal(s0, starts(rollout(m, sh)[2], 2))
    # from the rollout's per-prompt stream: its second draw, after the SDE noise
    pn = PromptNoise(sh.seed, "sde", 0, range(2))
    pn((16, 6, 3, 8, 8), dim=1)
    assert torch.equal(s0, uniform_ints(pn((6,), dim=0).reshape(-1), 0, 8 - 2))
    assert len(set(s0.tolist())) > 1  # samples draw their own windows
    s1 = starts(rollout(m, sh, round_idx=1)[2], 2)
    assert not torch.equal(s0, s1)
    # prompt 1's windows do not depend on the other prompts of the process (any world size)
    policy = rollout(m, sh)[0]
    cond = HashTextEncoder()(PROMPTS[1:2])
    one = shared(num_steps=16, num_generations=6, prompts_per_round=1)
    with torch.no_grad():
        ro = m.rollout(policy, cond, initial_noise(sh, 0, policy.latent_shape, [1]), PromptNoise(sh.seed, "sde", 0, [1]), one)
    assert torch.equal(starts(ro, 2), s0[6:])


def test_explicit_range_and_refusals():
    sh = shared(num_steps=10)
    m = fast(sde_window_size=2, sde_window_range=(4, 7))
    s = starts(rollout(m, sh)[2], 2)
    assert s.min() >= 4 and s.max() <= 5
    for kw in ({"sde_window_size": 3, "sde_window_range": (0, 2)}, {"sde_window_range": (8, 12)},
               {"sde_window_size": -1}, {"sde_window_size": 6}):  # 6 > N//2 = 5
        with pytest.raises(ValueError, match="sde_window"):
            fast(**kw).validate(sh)


def test_only_window_transitions_train():
    sh = shared(num_steps=8, num_generations=4)
    m = fast(sde_window_size=3)
    _, _, ro = rollout(m, sh)
    P, G = sh.prompts_per_round, sh.num_generations
    m.advantages(ro, {"brightness": torch.randn(P * G, generator=torch.Generator().manual_seed(1))}, {"brightness": 1.0})
    groups = m.update_groups(ro, torch.Generator().manual_seed(0))
    assert len(groups) == 2 and sorted(torch.cat(groups).tolist()) == list(range(P * G * 3))
    assert ro.transitions.mask.all()


def test_batched_equals_unbatched_and_cost_matches_a_round():
    _, _, a = rollout(fast(), shared())
    _, _, b = rollout(fast(), shared(max_batch=1))
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert torch.equal(a.transitions.k, b.transitions.k)
    assert torch.allclose(a.transitions.log_prob_old, b.transitions.log_prob_old, atol=1e-5)
    sh = shared()
    m = fast(beta=0.04)
    metrics = trainer(m, sh).step()
    c, P = m.cost(sh), sh.prompts_per_round
    assert metrics["first_ratio_max_dev"] < 1e-6
    assert (c.nfe_rollout, c.nfe_train, c.nfe_reference, c.images_scored) == (3 * 6, 3 * 2, 3 * 2, 3)
    assert metrics["nfe_rollout"] == P * c.nfe_rollout and metrics["nfe_train"] == P * c.nfe_train
    assert metrics["nfe_reference"] == P * c.nfe_reference and c.nfe_rollout_official is None


@pytest.mark.parametrize("preset", ["paper", "pocket"])
def test_cost_per_prompt_is_the_closed_form(preset):
    """G*N rollout evaluations (every step a full one), G*sde_window_size trained; the dry run shows it
    (tests/test_registry.py checks every registered method's dry run against cost())."""
    from g2rpo.presets import PRESETS

    p = PRESETS[preset]
    c = make_method("flowgrpo-fast", p.knobs).cost(p.shared)
    G, N = p.shared.num_generations, p.shared.num_steps
    assert (c.nfe_rollout, c.nfe_train, c.images_scored, c.nfe_rollout_official) == (G * N, 2 * G, G, None)


def test_train_smoke_runs():
    r = run_module("benchmarks.train", "--method", "flowgrpo-fast", "--preset", "smoke", "--rounds", "2")
    assert r.returncode == 0, r.stderr[-2000:]
