"""The method contract of g2rpo/method.py: the knobs every config records, the loss-weight and state hooks."""
import dataclasses

import pytest

from baselines.dancegrpo import DanceGRPOConfig
from baselines.flowgrpo import FlowGRPO, FlowGRPOConfig
from baselines.mixgrpo import MixGRPOConfig
from g2rpo.granular import G2RPOConfig

ADAMW = {"weight_decay": 0.0001, "betas": (0.9, 0.999), "eps": 1e-08, "max_grad_norm": 1.0}
OFFICIAL_EMA = {"decay": 0.9, "update_step_interval": 8, "repeats": 1, "warmup": True}
RECORDED = {  # asdict of each default config as MLflow params and checkpoint sidecars hold it: keys and values fixed
    G2RPOConfig: {"eta": 0.7, "eta_step_list": (0, 1, 2, 3, 4, 5, 6, 7), "granular_list": (1, 2),
                  "completion_end": "official", "clip_range": 0.0001, "adv_clip_max": 5.0, "update": "per_step",
                  "rollout_mode": "batched", "shared_prefix": True, "completion_dtype": "model", "anchor_dtype": "fp32",
                  "optim": {"lr": 2e-06, **ADAMW}, "ema": None},
    FlowGRPOConfig: {"noise_level": 0.7, "timestep_fraction": 0.99, "global_std": True, "multi_reward": "sum_rewards",
                     "init_same_noise": False, "beta": 0.0, "clip_range": 0.0001, "adv_clip_max": 5.0,
                     "num_rollout_steps": None, "optimizer_steps_per_round": 2, "num_batches_per_epoch": 2,
                     "world_size": 1, "use_lora": True, "latent_dtype": "fp32", "optim": None, "ema": OFFICIAL_EMA},
    DanceGRPOConfig: {"eta": 0.3, "timestep_fraction": 0.6, "ignore_last": True, "clip_range": 0.0001,
                      "adv_clip_max": 5.0, "init_same_noise": True, "gradient_accumulation_steps": 4, "world_size": 16,
                      "optim": {"lr": 1e-05, **ADAMW}, "ema": None},
    MixGRPOConfig: {"eta": 0.7, "window_size": 4, "window_shift_every": 25, "roll_back": True, "clip_range": 0.0001,
                    "adv_clip_max": 5.0, "gradient_accumulation_steps": 3, "world_size": 32,
                    "optim": {"lr": 1e-05, **ADAMW}, "ema": None},
}


@pytest.mark.parametrize("cfg", RECORDED, ids=lambda c: c.__name__)
def test_recorded_knobs_keep_their_keys_and_values(cfg):
    got = dataclasses.asdict(cfg())
    assert set(got) == set(RECORDED[cfg]) and got == RECORDED[cfg]
    assert all(type(got[k]) is type(v) or isinstance(v, str) for k, v in RECORDED[cfg].items())


def test_flowgrpo_records_its_official_lora_rate():
    assert dataclasses.asdict(FlowGRPO().cfg) == RECORDED[FlowGRPOConfig] | {"optim": {"lr": 0.0003, **ADAMW}}
