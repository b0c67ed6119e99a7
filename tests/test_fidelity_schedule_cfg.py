"""Fidelity to the official code (issue 17, items 3 and 4): the FLUX timestep truncation and SD3 true CFG in training.

The official arithmetic is restated here in a few lines, from reading DanceGRPO/MixGRPO ``train_grpo_flux.py`` and
Flow-GRPO ``scripts/train_sd3.py``; it is not imported from them.
"""
import torch

from g2rpo.models.sd3 import tiny_sd3_policy
from g2rpo.models.text import HashTextEncoder
from g2rpo.schedules import model_timestep, shifted_sigmas
from tests.helpers import PROMPTS

STEPS = range(1, 61)


def official_sigmas(n: int, shift: float = 3.0) -> torch.Tensor:
    """DanceGRPO/MixGRPO: a default-dtype (fp32) linspace, then the time shift on it in fp32."""
    s = torch.linspace(1, 0, n + 1)
    return (shift * s) / (1 + (shift - 1) * s)


def official_truncation(sigmas: torch.Tensor) -> torch.Tensor:
    """int(sigma * 1000) per 0-dim fp32 sigma, stacked as long timesteps; the model gets them / 1000."""
    return torch.tensor([int(sigma * 1000) for sigma in sigmas], dtype=torch.long) / 1000


def test_truncate3_is_the_official_arithmetic_on_the_sigma_it_is_given():
    for n in STEPS:
        ours, theirs = shifted_sigmas(n, 3.0), official_sigmas(n, 3.0)
        assert torch.equal(model_timestep(ours, "truncate3"), official_truncation(ours)), n
        assert torch.equal(model_timestep(theirs, "truncate3"), official_truncation(theirs)), n


def test_our_sigmas_are_the_official_fp32_ones():
    for n in STEPS:
        assert torch.equal(shifted_sigmas(n, 3.0), official_sigmas(n, 3.0)), n


def test_the_values_the_issue_names():
    t = model_timestep(shifted_sigmas(16, 3.0), "truncate3")
    assert t[4] == torch.tensor(0.900) and t[9] == torch.tensor(0.700)  # the fp64 floor gave 0.899 and 0.699
    assert torch.equal(t, official_truncation(official_sigmas(16, 3.0)))


def test_the_shifted_schedule_feeds_the_official_timesteps_for_every_n():
    assert model_timestep(shifted_sigmas(10, 3.0), "truncate3")[3] == torch.tensor(0.874)
    for n in STEPS:
        assert torch.equal(model_timestep(shifted_sigmas(n, 3.0), "truncate3"),
                           official_truncation(official_sigmas(n, 3.0))), n


def sd3_case(w=4.5):
    policy = tiny_sd3_policy(0, guidance_scale=w)
    g = torch.Generator().manual_seed(0)
    x, sigma = torch.randn(3, 3, 8, 8, generator=g), torch.rand(3, generator=g)
    return policy, x, sigma, HashTextEncoder()(PROMPTS[:3]), torch.randn(3, 3, 8, 8, generator=g)


def reference_cfg(policy, x, sigma, cond, detach):
    """Flow-GRPO's compute_log_prob: one call on the doubled batch [uncond; cond], the uncond half detached."""
    neg = policy.negative
    out = policy.transformer(hidden_states=torch.cat([x, x]), timestep=torch.cat([sigma, sigma]) * 1000,
                             encoder_hidden_states=torch.cat([neg.tokens.expand(3, -1, -1), cond.tokens]),
                             pooled_projections=torch.cat([neg.pooled.expand(3, -1), cond.pooled]),
                             return_dict=False)[0]
    v_uncond, v_cond = out.chunk(2)
    if detach:
        v_uncond = v_uncond.detach()
    return v_uncond + policy.guidance_scale * (v_cond - v_uncond)


def grads(policy, v, weight):
    params = list(policy.transformer.parameters())
    gs = torch.autograd.grad((v * weight).sum(), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, gs)])


def test_sd3_cfg_trains_through_the_conditional_half_only_as_flow_grpo():
    policy, x, sigma, cond, weight = sd3_case()
    v = policy(x, sigma, cond)
    ours = grads(policy, v, weight)
    ref_v = reference_cfg(policy, x, sigma, cond, detach=True)
    torch.testing.assert_close(ours, grads(policy, ref_v, weight), atol=1e-6, rtol=1e-5)
    undetached_v = reference_cfg(policy, x, sigma, cond, detach=False)
    undetached = grads(policy, undetached_v, weight)
    assert torch.nn.functional.cosine_similarity(ours, undetached, dim=0) < 0.99
    assert (ours - undetached).norm() > 0.1 * undetached.norm()
    # the value is unchanged: the same as the undetached guidance and as a rollout (no-grad) call
    torch.testing.assert_close(v, undetached_v.detach(), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        assert torch.equal(policy(x, sigma, cond), v.detach())
