"""DiffusionNFT: the forward-process loss, the DPM-Solver++ rollout, the old policy and their place on the loop."""
import pytest
import torch

from baselines.diffusionnft import (DiffusionNFT, DiffusionNFTConfig, dpm2_step, dpm_sample, nft_loss, old_decay,
                                    optimality_prob)
from g2rpo.ema import EMAConfig
from g2rpo.loop import PromptNoise, initial_noise
from g2rpo.models.text import HashTextEncoder
from g2rpo.models.flux import tiny_flux_policy
from g2rpo.registry import METHODS, make_method
from g2rpo.sampling import ode_sample
from g2rpo.schedules import shifted_sigmas
from g2rpo.sde import euler_step, predict_x0
from tests.helpers import PROMPTS, no_decay, rollout, shared, trainer


def nft(**kw):
    return DiffusionNFT(DiffusionNFTConfig(**{"use_lora": False, "optim": no_decay(1e-3)} | kw))


def test_registered_with_the_official_recipe():
    e = METHODS["diffusionnft"]
    assert e.method is DiffusionNFT and e.family == "diffusionnft" and not e.default
    c = make_method("diffusionnft", {}).cfg
    assert (c.beta, c.train_beta, c.decay_type, c.timestep_fraction, c.adv_clip_max, c.solver) == (1.0, 1e-4, 1, 0.99, 5.0, "dpm2")
    assert c.gradient_step_per_epoch == 1 and c.per_prompt_stat_tracking and c.global_std and c.use_lora
    assert c.ema == EMAConfig(decay=0.9, update_step_interval=1) and (c.optim.lr, c.optim.weight_decay) == (3e-4, 1e-4)


def test_old_decay_schedules():
    assert [old_decay(s, 0) for s in (0, 10, 10**6)] == [0.0, 0.0, 0.0]
    assert old_decay(0, 1) == 0 and old_decay(100, 1) == pytest.approx(0.1) and old_decay(600, 1) == 0.5
    assert old_decay(74, 2) == 0 and old_decay(75, 2) == 0 and old_decay(100, 2) == pytest.approx(0.1875)
    assert old_decay(10**4, 2) == 0.999


def gaussian_velocity(mu, s):
    """The exact velocity of data N(mu, s^2) under x_t = (1 - t) x0 + t eps: (x_t - E[x0 | x_t]) / t."""
    def v(x, t, cond):
        t = t.view(-1, 1, 1, 1).to(x.dtype)
        return (x - mu - (1 - t) * s**2 / ((1 - t) ** 2 * s**2 + t**2) * (x - (1 - t) * mu)) / t
    return v


def test_dpm_solver_exact_cases_and_order():
    z = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)).double()
    c = torch.randn(1, 1, 2, 2).double()
    constant = lambda x, t, cond: (x - c) / t.view(-1, 1, 1, 1)  # noqa: E731  x0-prediction c everywhere
    sig = shifted_sigmas(10, 3.0).double()
    torch.testing.assert_close(dpm_sample(constant, z, sig, None).double(), c.expand_as(z), atol=1e-5, rtol=0)
    # the 2M step is exact for a constant x0-prediction: x_t = (1 - t) c + t (x_s - (1 - s) c) / s
    x = z[:1].float()
    m = c.float().expand_as(x)
    torch.testing.assert_close(dpm2_step(x, m, m, 0.9, 0.6, 0.3), 0.7 * m + 0.3 * (x - 0.4 * m) / 0.6, atol=1e-6, rtol=0)
    # previous sigma 1 (lambda = -inf): the correction vanishes, the step is Euler
    v = torch.randn_like(x)
    m0 = predict_x0(x, v, torch.tensor(0.8))
    torch.testing.assert_close(dpm2_step(x, m0, torch.randn_like(x), 1.0, 0.8, 0.5),
                               euler_step(x, v, torch.tensor(0.8), torch.tensor(0.5)), atol=1e-6, rtol=0)
    # Gaussian data, exact ODE endpoint mu + s z: dpm2 is far closer than Euler (dpm1) at equal evaluations
    mu, s = 0.5, 0.2
    vel = gaussian_velocity(mu, s)
    for shift, n, gain in ((1.0, 40, 5), (3.0, 80, 10)):
        sig = shifted_sigmas(n, shift).double()
        err = [(dpm_sample(vel, z, sig, None, order=o).double() - (mu + s * z)).abs().max().item() for o in (1, 2)]
        assert err[1] < err[0] / gain, (shift, n, err)


def test_dpm1_is_the_euler_ode_and_batching_does_not_matter():
    policy = tiny_flux_policy(0)
    sig = shared(num_steps=6).sigmas()
    x = torch.randn(4, *policy.latent_shape, generator=torch.Generator().manual_seed(1))
    cond = HashTextEncoder()(PROMPTS[:4])
    _, xs, _ = ode_sample(policy, x, sig, cond)
    torch.testing.assert_close(dpm_sample(policy, x, sig, cond, order=1), xs[-1], atol=1e-5, rtol=0)
    full = dpm_sample(policy, x, sig, cond)
    torch.testing.assert_close(dpm_sample(policy, x, sig, cond, max_batch=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dpm_sample(policy, x[2:3], sig, cond[[2]]), full[2:3], atol=1e-5, rtol=1e-5)


def test_optimality_probability():
    a = torch.tensor([-7.0, -5.0, -2.5, 0.0, 2.5, 5.0, 9.0])
    assert optimality_prob(a, 5.0).tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert optimality_prob(a, 5.0, "positive_only").tolist() == [0.5, 0.5, 0.5, 0.5, 0.75, 1.0, 1.0]
    assert optimality_prob(a, 5.0, "negative_only").tolist() == [0.0, 0.0, 0.25, 0.5, 0.5, 0.5, 0.5]
    torch.testing.assert_close(optimality_prob(a, 5.0, "one_only"), torch.tensor([0.5] * 4 + [0.6] * 3))
    torch.testing.assert_close(optimality_prob(a, 5.0, "binary"), torch.tensor([0.4, 0.4, 0.4, 0.5, 0.6, 0.6, 0.6]))


def test_nft_loss_closed_form():
    # one-pixel latents: the adaptive weight makes each term |x0_hat - x0|, so the loss is
    # r |x_t - t v+ - x0| / beta + (1 - r) |x_t - t v- - x0| / beta
    v, v_old = torch.tensor([0.3, -1.0]), torch.tensor([0.1, 0.5])
    x_t, t, x0, r = torch.tensor([0.2, 0.4]), torch.tensor([0.5, 0.8]), torch.tensor([-0.1, 0.9]), torch.tensor([0.75, 0.2])
    for beta in (1.0, 0.1):
        pos, neg = beta * v + (1 - beta) * v_old, (1 + beta) * v_old - beta * v
        want = (r * (x_t - t * pos - x0).abs() + (1 - r) * (x_t - t * neg - x0).abs()) / beta
        got = nft_loss(v.view(2, 1, 1, 1), v_old.view(2, 1, 1, 1), x_t.view(2, 1, 1, 1), t, x0.view(2, 1, 1, 1), r, beta)
        torch.testing.assert_close(got, want.double())  # the official weight is float64, and so its loss
    # gradient of the r = 1 term pulls v+ toward the velocity that maps x_t to x0, the r = 0 term pushes v- there
    vv = v.view(2, 1, 1, 1).clone().requires_grad_()
    nft_loss(vv, v_old.view(2, 1, 1, 1), x_t.view(2, 1, 1, 1), t, x0.view(2, 1, 1, 1), torch.ones(2), 1.0).sum().backward()
    target = (x_t - x0) / t
    assert torch.equal(torch.sign(vv.grad.flatten()), torch.sign(v - target))
    # v = v_old (before the first update): both terms equal, the loss no longer depends on r
    same = [nft_loss(v_old.view(2, 1, 1, 1), v_old.view(2, 1, 1, 1), x_t.view(2, 1, 1, 1), t, x0.view(2, 1, 1, 1),
                     torch.full((2,), q), 0.3) for q in (0.0, 1.0)]
    torch.testing.assert_close(same[0], same[1])


def test_rollout_rows_are_noised_clean_samples():
    sh = shared(num_steps=6, num_generations=4, prompts_per_round=2)
    m = nft()
    policy, cond, ro = rollout(m, sh)
    P, G, T = 2, 4, 5
    tr, sig = ro.transitions, sh.sigmas()
    assert ro.layout.steps == T and len(tr.k) == P * G * T and tr.prompt.tolist() == [p for p in range(P) for _ in range(G * T)]
    assert all(len(set(ks)) == T for ks in tr.k.view(P * G, T).tolist())  # T distinct timesteps per sample
    assert torch.equal(tr.sigma, sig[tr.k]) and torch.all(tr.sigma_next == 0) and tr.n == 1
    x0 = dpm_sample(policy, initial_noise(sh, 0, policy.latent_shape).reshape(P * G, *policy.latent_shape), sig,
                    cond[[0] * G + [1] * G])
    torch.testing.assert_close(tr.x_next[::T, 0], x0)
    torch.testing.assert_close(ro.images, policy.decode(x0))
    eps = (tr.x - (1 - tr.sigma.view(-1, 1, 1, 1)) * tr.x_next[:, 0]) / tr.sigma.view(-1, 1, 1, 1)
    assert abs(eps.std().item() - 1) < 0.15  # x_t = (1 - t) x0 + t eps with eps standard normal
    with torch.no_grad():
        torch.testing.assert_close(tr.extra["v_old"], policy(tr.x, tr.sigma, cond[tr.prompt.tolist()]), atol=1e-5, rtol=1e-5)
    # prompt 1 alone draws the same rows (per-prompt noise streams)
    with torch.no_grad():
        alone = m.rollout(policy, cond[[1]], initial_noise(sh, 0, policy.latent_shape, [1]),
                          PromptNoise(sh.seed, "sde", 0, [1]), sh, 0)
    half = slice(G * T, None)
    assert torch.equal(alone.transitions.k, tr.k[half])
    torch.testing.assert_close(alone.transitions.x, tr.x[half], atol=1e-5, rtol=1e-5)


def test_advantages_and_update_groups():
    sh = shared(num_steps=6, num_generations=4, prompts_per_round=2)
    m = nft(gradient_step_per_epoch=2)
    _, _, ro = rollout(m, sh)
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 1.0, 1.0])
    m.advantages(ro, {"a": r, "b": torch.zeros(8)}, {"a": 2.0, "b": 1.0})
    rr = 2 * r.view(2, 4)
    want = (rr - rr.mean(1, keepdim=True)) / (rr.std(unbiased=False) + 1e-4)
    torch.testing.assert_close(ro.transitions.adv[::5, 0], want.flatten())
    groups = m.update_groups(ro, torch.Generator().manual_seed(0))
    assert len(groups) == 2 == m.optimizer_steps(sh) and sorted(torch.cat(groups).tolist()) == list(range(40))
    assert all(torch.equal(g.view(-1, 5) % 5, torch.arange(5).expand(len(g) // 5, 5)) for g in groups)  # whole samples
    assert ro.transitions.mask.all()
    m.advantages(ro, {"a": torch.where(torch.arange(8) == 3, float("nan"), r)}, {"a": 1.0})
    assert ro.transitions.mask[:, 0].tolist() == [i // 5 != 3 for i in range(40)]
    m2 = nft(per_prompt_stat_tracking=False)
    m2.advantages(ro, {"a": r}, {"a": 1.0})
    torch.testing.assert_close(ro.transitions.adv[::5, 0], (r - r.mean()) / (r.std(unbiased=False) + 1e-4))


def test_old_policy_follows_the_decay_and_samples_the_rollout():
    sh = shared(num_steps=4, num_generations=2, prompts_per_round=2)
    m = nft(decay_type=1)
    t = trainer(m, sh)
    params = t._trained()
    start = {n: p.detach().clone() for n, p in params.items()}
    t.step()  # one optimizer step: decay 0.001
    for n, p in params.items():
        torch.testing.assert_close(m.old[n], 0.001 * start[n] + 0.999 * p.detach(), atol=1e-6, rtol=1e-6)
    # the next rollout samples with the old weights (here set back to the start), and the live ones are back afterwards
    for n, w in m.old.items():
        w.copy_(start[n])
    live = {n: p.detach().clone() for n, p in params.items()}
    _, _, ro = rollout(m, sh, policy=t.policy, round_idx=1)
    _, _, ro_start = rollout(nft(), sh, policy=tiny_flux_policy(0), round_idx=1)
    _, _, ro_live = rollout(nft(), sh, policy=t.policy, round_idx=1)
    torch.testing.assert_close(ro.images, ro_start.images, atol=1e-6, rtol=0)
    assert (ro_live.images - ro.images).abs().max() > 1e-4
    assert all(torch.equal(p, live[n]) for n, p in params.items())
    # decay_type 0 is on-policy: the old policy is the trained one after every round
    m0 = nft(decay_type=0)
    t0 = trainer(m0, sh)
    t0.step()
    assert all(torch.equal(m0.old[n], p.detach()) for n, p in t0._trained().items())


def test_loss_needs_no_ratio_and_the_cost_is_counted():
    sh = shared(num_steps=6, num_generations=4, prompts_per_round=2)
    m = nft()
    t = trainer(m, sh)
    metrics = t.step()
    assert metrics["ratio_max_dev"] == 0 and metrics["clip_frac"] == 0 and metrics["optimizer_steps"] == 1
    c = m.cost(sh)
    assert (c.nfe_rollout, c.nfe_train, c.nfe_reference, c.images_scored) == (4 * 6 + 4 * 5, 20, 20, 4)
    assert metrics["nfe_rollout"] == 2 * c.nfe_rollout and metrics["nfe_reference"] == 2 * c.nfe_reference
    assert nft(train_beta=0.0).cost(sh).nfe_reference == 0


@pytest.mark.parametrize("knobs", [{"beta": 0.0}, {"train_beta": -1.0}, {"decay_type": 3}, {"adv_mode": "most"},
                                   {"solver": "flow"}, {"timestep_fraction": 0.1}, {"gradient_step_per_epoch": 0}])
def test_bad_knobs_fail_before_model_work(knobs):
    with pytest.raises(ValueError):
        nft(**knobs).validate(shared(num_steps=6))


def test_a_full_fine_tune_needs_an_explicit_rate():
    with pytest.raises(ValueError, match="full fine-tune"):
        DiffusionNFT(DiffusionNFTConfig(use_lora=False)).validate(shared())
