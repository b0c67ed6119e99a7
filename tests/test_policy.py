"""The FLUX policy wrapper: packing, ids, timestep convention, guidance."""
import torch
from diffusers import FluxPipeline

from g2rpo.models.flux import image_ids, pack, tiny_flux_policy, unpack
from g2rpo.models.text import HashTextEncoder


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
