"""Compiled rollouts (``SharedConfig.compile``) and bf16 completions: speed options with stated effects on results."""
import pytest
import torch

from g2rpo.granular import G2RPO, G2RPOConfig
from g2rpo.models.text import HashTextEncoder
from g2rpo.policy import ROLLOUT_BATCHES, padded_calls
from tests.helpers import rollout, shared, trainer


def test_padded_calls_only_show_the_compiled_sizes_and_keep_every_row():
    cond = HashTextEncoder()(["a"] * 3 + ["b"] * 4 + ["c"] * 40)
    x, t = torch.randn(47, 3, 4, 4), torch.rand(47)
    seen = []

    def fn(x, t, c):  # row-wise, like a model: any row's output depends on that row only
        seen.append(len(x))
        assert len(t) == len(c) == len(x)
        return x * t.view(-1, 1, 1, 1) + c.pooled[:, :1, None, None]

    out = padded_calls(fn, x, t, cond)
    assert seen == [32, 16] and set(seen) <= set(ROLLOUT_BATCHES)  # 47 = 32 + 15 padded to 16
    assert torch.equal(out, fn(x, t, cond)[: len(x)])


@pytest.mark.slow  # torch.compile builds a graph per batch size (~10-60 s)
def test_compiled_rollouts_match_eager_and_keep_the_ratio_at_one():
    sh = shared(compile=True)
    m = G2RPO(G2RPOConfig(eta_step_list=(0, 2), granular_list=(1, 2)))
    _, _, eager = rollout(m, shared())
    policy, _, comp = rollout(m, sh, policy=trainer(m, sh).policy)  # the Trainer sets policy.compiled
    assert policy.compiled
    assert torch.allclose(eager.images, comp.images, atol=1e-5)
    assert torch.allclose(eager.transitions.log_prob_old, comp.transitions.log_prob_old, atol=1e-4)
    t = trainer(m, sh)
    assert t.policy.compiled and t.step()["first_ratio_max_dev"] < 1e-6  # compiled rollout, eager training forward


def test_bf16_completions_change_images_not_transitions_and_keep_the_ratio_at_one():
    sh = shared()
    fp = G2RPO(G2RPOConfig(eta_step_list=(0, 2), granular_list=(1, 2)))
    bf = G2RPO(G2RPOConfig(eta_step_list=(0, 2), granular_list=(1, 2), completion_dtype="bf16"))
    _, _, a = rollout(fp, sh)
    _, _, b = rollout(bf, sh)
    assert torch.equal(a.transitions.x_next, b.transitions.x_next)
    assert torch.equal(a.transitions.log_prob_old, b.transitions.log_prob_old)
    assert torch.equal(a.extra_images["ode"], b.extra_images["ode"])  # the anchor stays fp32
    assert 0 < (a.images - b.images).abs().max() < 0.1
    _, _, ref = rollout(G2RPO(G2RPOConfig(eta_step_list=(0, 2), granular_list=(1, 2), completion_dtype="bf16",
                                          rollout_mode="reference")), sh)
    assert (ref.images - b.images).abs().max() < 0.05  # the loop casts its completions alike
    assert trainer(bf, sh).step()["first_ratio_max_dev"] == 0.0
    with pytest.raises(ValueError, match="completion_dtype"):
        G2RPOConfig(completion_dtype="fp16")
