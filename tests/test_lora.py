"""LoRA through peft (adapter-only training, Flow-GRPO's adapter-disabled KL reference, adapter files) and the
precision/memory switches (gradient checkpointing, bf16 autocast), on the tiny FLUX-class policy."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from baselines.flowgrpo import FlowGRPO, FlowGRPOConfig
from g2rpo.checkpoint import CheckpointError
from g2rpo.loop import Trainer
from g2rpo.loss import kl_to_reference
from g2rpo.models.flux import tiny_flux_policy
from g2rpo.models.lora import (LORA_PRESETS, BaseModelView, adapter_parameters, add_lora, has_lora, load_adapter,
                               reference_policy, save_adapter)
from g2rpo.models.precision import autocast, enable_memory_savers
from g2rpo.models.text import HashTextEncoder
from g2rpo.sde import flow_sde_g, sde_step
from tests.helpers import PROMPTS, REWARDS, no_decay, shared


def inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    sigma = torch.rand(n, generator=g) * 0.9 + 0.05
    return x, sigma, HashTextEncoder()(PROMPTS[:n])


def adapter_state(policy):
    """Everything a reference call must leave as it was."""
    layers = [m for m in policy.transformer.modules() if hasattr(m, "disable_adapters") and hasattr(m, "lora_A")]
    return ({n: p.requires_grad for n, p in policy.named_parameters()}, [m.disable_adapters for m in layers],
            policy.transformer.active_adapters())


def base_weights_of(policy):
    """The LoRA policy's base weights under the names of a policy without LoRA."""
    return {n.replace(".base_layer.", "."): p for n, p in policy.named_parameters() if ".lora_" not in n}


def test_only_adapter_weights_train_and_the_adapted_model_starts_as_the_base():
    base = tiny_flux_policy(0)
    policy = add_lora(tiny_flux_policy(0))
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    adapters = adapter_parameters(policy)
    assert trainable and sorted(trainable) == sorted(adapters)
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    # Flow-GRPO's FLUX targets: q/k/v/out + the context projections + both feed-forwards of the dual block (12),
    # q/k/v of the single block (3); A and B each
    assert len(adapters) == 2 * 15
    assert len(adapter_parameters(add_lora(tiny_flux_policy(0), **LORA_PRESETS["dancegrpo-flux"]))) == 2 * 7
    t = Trainer(policy, HashTextEncoder(), FlowGRPO(), REWARDS, shared(), PROMPTS)
    assert {id(p) for g in t.opt.param_groups for p in g["params"]} == {id(p) for p in adapters.values()}
    # peft initialises B = 0: before any update the adapted model is the base model, bit for bit
    x, sigma, cond = inputs()
    with torch.no_grad():
        v_base = base(x, sigma, cond)
        assert torch.equal(policy(x, sigma, cond), v_base)
        assert torch.equal(reference_policy(policy)(x, sigma, cond), v_base)
    with pytest.raises(ValueError, match="already"):
        add_lora(policy)


def test_reference_is_a_view_that_touches_nothing():
    policy = add_lora(tiny_flux_policy(0))
    with torch.no_grad():
        for p in adapter_parameters(policy).values():
            p.normal_(0, 0.05)  # the adapted model now differs from the base
    ref = reference_policy(policy)
    assert isinstance(ref, BaseModelView) and list(ref.parameters()) == []
    ref.eval().requires_grad_(False)  # what a caller may do to a reference: must not reach the policy
    assert all(p.requires_grad for p in adapter_parameters(policy).values()) and policy.training
    base = tiny_flux_policy(0)
    x, sigma, cond = inputs()
    before = adapter_state(policy)
    policy.reset_counts()
    policy.log_calls = True
    v = policy(x, sigma, cond)  # with grad, as in the update
    v_ref = ref(x, sigma, cond)
    assert not v_ref.requires_grad and torch.equal(v_ref, base(x, sigma, cond).detach())
    assert not torch.allclose(v.detach(), v_ref, atol=1e-4)
    assert adapter_state(policy) == before
    assert policy.calls == {"rollout": 0, "train": 4} and len(policy.call_log) == 1  # the reference's call isn't here
    assert ref.calls == {"rollout": 0, "train": 4}  # ...but on the reference
    # the KL-style loss through the view gives gradients to the adapter only
    ((v - v_ref) ** 2).mean().backward()
    assert all(p.grad is not None for p in adapter_parameters(policy).values())
    assert all(p.grad is None for n, p in policy.named_parameters() if n not in adapter_parameters(policy))
    # a failing call leaves the adapters as they were
    bad = type(cond)(tokens=cond.tokens[:, :, :5], pooled=cond.pooled)
    with pytest.raises(Exception):
        ref(x, sigma, bad)
    assert adapter_state(policy) == before
    assert not torch.equal(policy(x, sigma, cond), ref(x, sigma, cond))
    # without LoRA the reference is a frozen copy, as before
    full = tiny_flux_policy(0)
    frozen = reference_policy(full)
    assert not isinstance(frozen, BaseModelView) and not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in full.parameters())


def test_flowgrpo_round_with_lora_and_kl_keeps_the_base_model():
    sh = shared()
    base = tiny_flux_policy(0)
    policy = add_lora(tiny_flux_policy(0))
    method = FlowGRPO(FlowGRPOConfig(beta=0.04, optim=no_decay(1e-3)))
    t = Trainer(policy, HashTextEncoder(), method, REWARDS, sh, PROMPTS)
    assert isinstance(method.reference, BaseModelView)
    m = t.step()
    assert m["first_ratio_max_dev"] < 1e-6 and m["optimizer_steps"] == 2
    cost, P = method.cost(sh), sh.prompts_per_round
    assert m["nfe_train"] == P * cost.nfe_train and m["nfe_rollout"] == P * cost.nfe_rollout
    assert m["nfe_reference"] == P * cost.nfe_reference > 0
    x, sigma, cond = inputs()
    with torch.no_grad():
        v, v_ref, v_base = policy(x, sigma, cond), method.reference(x, sigma, cond), base(x, sigma, cond)
    assert (v - v_ref).abs().max() > 1e-5  # the adapter moved
    assert torch.equal(v_ref, v_base)  # the reference is still the base model
    bw = base_weights_of(policy)
    assert sorted(bw) == sorted(n for n, _ in base.named_parameters())
    assert all(torch.equal(bw[n], p) for n, p in base.named_parameters())  # base weights untouched
    # the KL term is live: positive now that the policy has moved away from the reference
    g = flow_sde_g(sigma, 0.9, 0.7)
    mean, mean_ref = (sde_step(x, u, sigma, sigma - 0.05, g).mean for u in (v, v_ref))
    assert kl_to_reference(mean, mean_ref, g).min() > 0


def test_adapter_files_round_trip_and_wrong_files_are_refused(tmp_path):
    from peft import get_peft_model_state_dict

    a = add_lora(tiny_flux_policy(0))
    with torch.no_grad():
        for p in adapter_parameters(a).values():
            p.normal_(0, 0.05)
    path = save_adapter(a, tmp_path / "adapter.safetensors")
    saved = load_file(str(path))
    assert sorted(saved) == sorted(get_peft_model_state_dict(a.transformer))  # adapter weights only, peft's keys
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in adapter_parameters(a).values())
    b = load_adapter(add_lora(tiny_flux_policy(0)), path)
    x, sigma, cond = inputs()
    with torch.no_grad():
        assert torch.equal(a(x, sigma, cond), b(x, sigma, cond))
    # the official codes' prefixes load too
    save_file({f"base_model.model.{k}": v for k, v in saved.items()}, str(tmp_path / "peft.safetensors"))
    c = load_adapter(add_lora(tiny_flux_policy(0)), tmp_path / "peft.safetensors")
    assert all(torch.equal(p, adapter_parameters(a)[n]) for n, p in adapter_parameters(c).items())

    def refused(policy, file, match):
        before = {n: p.clone() for n, p in adapter_parameters(policy).items()} if has_lora(policy) else {}
        with pytest.raises(CheckpointError, match=match) as e:
            load_adapter(policy, file)
        msg = str(e.value)
        assert "\n" not in msg and str(file) in msg
        assert all(torch.equal(p, before[n]) for n, p in before.items())  # nothing was half-loaded

    refused(add_lora(tiny_flux_policy(0), rank=8, alpha=16), path, "wrong-shape")
    refused(add_lora(tiny_flux_policy(0), **LORA_PRESETS["dancegrpo-flux"]), path, "missing|unexpected")
    refused(add_lora(tiny_flux_policy(0), rank=64, alpha=64), path, "alpha")
    refused(tiny_flux_policy(0), path, "no LoRA adapter")
    full = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_flux_policy(0).state_dict().items()}, str(full))
    refused(add_lora(tiny_flux_policy(0)), full, "unexpected")
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(path.read_bytes()[:500])
    refused(add_lora(tiny_flux_policy(0)), bad, "unreadable")
    refused(add_lora(tiny_flux_policy(0)), tmp_path / "absent.safetensors", "missing")


def block_calls(policy):
    """Counts runs of the first block's forward (recomputation in backward included; this torch version does not
    fire forward hooks on checkpoint recomputation, so the forward itself is wrapped)."""
    calls, block = [], policy.transformer.transformer_blocks[0]
    forward = block.forward
    block.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
    return calls


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_update(lora):
    sh = shared()
    params, counts = [], []
    for checkpointing in (False, True):
        policy = tiny_flux_policy(0)
        if lora:
            add_lora(policy, rank=4, alpha=8)
        start = {n: p.detach().clone() for n, p in policy.named_parameters()}
        enable_memory_savers(policy, gradient_checkpointing=checkpointing)
        calls = block_calls(policy)
        method = FlowGRPO(FlowGRPOConfig(beta=0.04, use_lora=lora, optim=no_decay(1e-3)))
        Trainer(policy, HashTextEncoder(), method, REWARDS, sh, PROMPTS).step()
        params.append({n: p.detach().clone() for n, p in policy.named_parameters()})
        counts.append(len(calls))
    assert counts[1] > counts[0]  # the checkpointed blocks ran again in the backward pass
    assert any(not torch.equal(p, start[n]) for n, p in params[0].items())  # the round did update
    for n, p in params[0].items():
        assert torch.allclose(params[1][n], p, rtol=0, atol=1e-7), n


def test_bf16_autocast_is_close_and_returns_fp32():
    policy = tiny_flux_policy(0)
    x, sigma, cond = inputs()
    seen = []
    policy.transformer.transformer_blocks[0].attn.to_q.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    v32 = policy(x, sigma, cond)
    with autocast(torch.bfloat16, "cpu"):
        v16 = policy(x, sigma, cond)
    assert seen == [torch.float32, torch.bfloat16]  # the matmuls really ran in bf16
    assert v16.dtype == torch.float32 and not torch.equal(v16, v32)
    assert ((v16 - v32).norm() / v32.norm()).item() < 0.05
    # fp32 master weights get fp32 gradients
    v16.pow(2).mean().backward()
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in policy.parameters())
    with autocast(None):
        assert torch.equal(policy(x, sigma, cond), v32)
    with autocast("fp32"):
        assert torch.equal(policy(x, sigma, cond), v32)


def test_lora_exports_in_diffusers_format_and_the_pipeline_loads_it(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from g2rpo.export import LORA_FILE, export_diffusers, export_lora
    from g2rpo.models.flux import FluxPolicy

    policy = add_lora(tiny_flux_policy(0), rank=4, alpha=8)
    with torch.no_grad():  # B = 0 at init: move the adapter so the export carries something
        for p in adapter_parameters(policy).values():
            p.add_(torch.randn_like(p) * 0.05)
    out = export_lora(policy, tmp_path / "lora")
    assert (out / LORA_FILE).is_file()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=tiny_flux_policy(0).transformer)
    pipe.load_lora_weights(str(out))  # diffusers' own loader, onto a fresh base model
    loaded = FluxPolicy(pipe.transformer, policy.latent_shape, policy.patch)
    x, sigma, cond = inputs()
    with torch.no_grad():
        want, got, base = policy(x, sigma, cond), loaded(x, sigma, cond), tiny_flux_policy(0)(x, sigma, cond)
    assert (want - base).abs().max() > 1e-4  # the adapter changes the velocity ...
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)  # ... and diffusers' loaded adapter does the same
    with pytest.raises(ValueError, match="export_lora"):
        export_diffusers(policy, tmp_path / "full")
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not a LoRA export"):
        export_lora(policy, tmp_path / "mine")
