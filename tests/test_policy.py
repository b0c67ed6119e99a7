"""The FLUX policy wrapper: packing, ids, timestep convention, guidance."""
import pytest
import torch
from diffusers import FluxPipeline

from g2rpo.models.flux import image_ids, pack, tiny_flux_policy, unpack
from g2rpo.models.text import HashTextEncoder
from g2rpo.policy import Cond


def test_pack_matches_flux_pipeline_and_inverts():
    x = torch.randn(2, 16, 8, 6)
    assert torch.equal(pack(x, 2), FluxPipeline._pack_latents(x, 2, 16, 8, 6))
    assert torch.equal(unpack(pack(x, 2), 16, 8, 6, 2), x)
    assert torch.equal(unpack(pack(x, 1), 16, 8, 6, 1), x)
    ids = FluxPipeline._prepare_latent_image_ids(1, 4, 3, "cpu", torch.float32)
    assert torch.equal(image_ids(8, 6, 2), ids)


def _capture(policy):
    seen = {}

    def hook(module, args, kwargs):
        seen.update(kwargs)

    policy.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_timestep_convention_and_guidance_reach_the_model():
    cond = HashTextEncoder()(["a cat"])
    x = torch.randn(1, 3, 8, 8)
    for convention, expected in [("truncate3", 0.978), ("float", 0.97826)]:
        policy = tiny_flux_policy(timestep_convention=convention, guidance=3.5)
        seen = _capture(policy)
        policy(x, torch.tensor([0.97826]), cond)
        assert abs(seen["timestep"].item() - expected) < 1e-6
        assert seen["guidance"].item() == 3.5
    policy = tiny_flux_policy()
    seen = _capture(policy)
    policy(x, torch.tensor([0.5]), cond)
    assert seen["guidance"] is None


def test_velocity_is_per_sample_and_counted():
    policy = tiny_flux_policy()
    cond = HashTextEncoder()(["a cat", "a dog"])
    x, s = torch.randn(2, 3, 8, 8), torch.tensor([0.9, 0.4])
    with torch.no_grad():
        both = policy(x, s, cond)
        one = torch.cat([policy(x[i : i + 1], s[i : i + 1], cond[i]) for i in range(2)])
    assert torch.allclose(both, one, atol=1e-5)
    assert policy.calls == {"rollout": 4, "train": 0}
    policy(x, s, cond).sum().backward()
    assert policy.calls["train"] == 2


@pytest.mark.parametrize("guidance", [None, 3.5])
def test_analytic_flops_equal_torch_flop_counter(guidance):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from g2rpo.models.flux import flux_forward_flops

    pol = tiny_flux_policy(0, guidance=guidance)
    x, cond = torch.randn(3, *pol.latent_shape), Cond(torch.randn(3, 5, 32), torch.randn(3, 32))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:  # math SDPA is counted
        pol(x, torch.full((3,), 0.5), cond)
    assert fc.get_total_flops() == 3 * flux_forward_flops(pol.transformer.config, img_tokens=16, txt_tokens=5)


def test_inputs_go_to_the_model_device_and_velocities_come_back():
    """The device boundary: the core keeps its tensors on the CPU, the model may live elsewhere (meta stands in for a
    GPU here: the only other device this machine has)."""
    from g2rpo.policy import FlowPolicy

    seen = {}

    class Elsewhere(FlowPolicy):
        latent_shape = (3, 4, 4)
        device = torch.device("meta")

        def _velocity(self, x, t, cond):
            seen.update(x=x.device, t=t.device, tokens=cond.tokens.device, pooled=cond.pooled.device)
            return torch.ones(x.shape, dtype=torch.float16)  # what the device computed, here made on the CPU

    cond = Cond(tokens=torch.zeros(2, 5, 8), pooled=torch.zeros(2, 8))
    v = Elsewhere()(torch.zeros(2, 3, 4, 4), torch.tensor([0.5, 0.7]), cond)
    assert set(seen.values()) == {torch.device("meta")}
    assert v.device == torch.device("cpu") and v.dtype == torch.float32 and torch.equal(v, torch.ones(2, 3, 4, 4))
    assert tiny_flux_policy(0).device == torch.device("cpu")
