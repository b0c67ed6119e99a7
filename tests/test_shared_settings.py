"""Shared settings that change how the model runs (timestep convention, precision, LoRA, gradient checkpointing) are
applied by the Trainer, not only recorded: a config value that does nothing would be a silent difference."""
import dataclasses

import pytest
import torch

from g2rpo.config import SharedConfig
from g2rpo.loop import Trainer
from g2rpo.models.flux import tiny_flux_policy
from g2rpo.models.lora import BaseModelView, adapter_parameters, has_lora
from g2rpo.models.text import HashTextEncoder
from g2rpo.presets import preset
from g2rpo.registry import make_method
from g2rpo.rewards import Brightness
from g2rpo.schedules import TimestepConvention
from g2rpo.tiers import TINY_TRAIN


def test_bf16_precision_runs_the_forward_under_autocast_and_returns_fp32():
    policy = tiny_flux_policy(0).eval()
    x, s = torch.randn(3, *policy.latent_shape), torch.tensor([0.9, 0.5, 0.2])
    cond = HashTextEncoder()(["a", "b", "c"])
    v32 = policy(x, s, cond)
    policy.precision = "bf16"
    v16 = policy(x, s, cond)
    rel = ((v16 - v32).norm() / v32.norm()).item()
    assert v16.dtype == torch.float32 and 0 < rel < 0.02, rel


def test_trainer_applies_every_shared_setting():
    shared = dataclasses.replace(preset("smoke").shared, precision="bf16", lora="flowgrpo-flux",
                                 gradient_checkpointing=True, timestep_convention="float", rounds=1)
    policy = tiny_flux_policy(0)
    trainer = Trainer(policy, HashTextEncoder(), make_method("flowgrpo", {}, beta=0.04), {"brightness": Brightness(),
                      "redness": Brightness()}, shared, TINY_TRAIN)
    assert policy.precision == "bf16" and policy.timestep_convention is TimestepConvention.FLOAT
    assert policy.transformer.gradient_checkpointing and has_lora(policy)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    assert len(trainable) == len(adapter_parameters(policy)) > 0
    ref = trainer.method.reference  # Flow-GRPO's KL reference under LoRA: the same module, adapters off
    assert isinstance(ref, BaseModelView) and ref.precision == "bf16"
    m = trainer.step()
    assert m["optimizer_steps"] > 0 and torch.isfinite(torch.tensor(m["loss"]))


def test_bad_settings_fail_when_the_config_is_made():
    for bad, says in (({"precision": "fp8"}, "precision must be"), ({"lora": "r7"}, "is not one of"),
                      ({"timestep_convention": "round"}, "round")):
        with pytest.raises(ValueError, match=says):
            SharedConfig(**bad)


def test_digests_recorded_before_the_new_fields_still_match():
    # values of SharedConfig.digest() at the commit before lora/gradient_checkpointing existed
    assert SharedConfig().digest() == "2bc6a2ce06cd"
    emoji = dataclasses.replace(preset("pocket-emoji").shared, compile=False)  # compiled since: a new field, set
    assert emoji.digest() == "f5d986d7cfdc" and preset("paper").shared.digest() == "36d5f0937f04"
    assert SharedConfig(lora="flowgrpo-flux").digest() != SharedConfig().digest()
    assert SharedConfig(gradient_checkpointing=True).digest() != SharedConfig().digest()
