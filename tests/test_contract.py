"""The method contract of g2rpo/method.py: the knobs every config records, the loss-weight and state hooks."""
import dataclasses

import pytest
import torch

from baselines.dancegrpo import DanceGRPOConfig
from baselines.flowgrpo import FlowGRPO, FlowGRPOConfig
from baselines.mixgrpo import MixGRPOConfig
from g2rpo.config import MethodConfig, OptimConfig
from g2rpo.granular import G2RPO, G2RPOConfig
from g2rpo.method import Method
from tests.helpers import no_decay, shared, trainer

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


def test_method_takes_its_config_defaults_and_optim_is_the_configs():
    m = Method()
    assert m.cfg == MethodConfig() and m.optim is m.cfg.optim and m.ema is None and m.clip_range == 1e-4
    m.optim = no_decay()
    assert m.cfg.optim == no_decay()
    assert G2RPO().cfg == G2RPOConfig() and FlowGRPO().optim.lr == 3e-4


class Weighted(G2RPO):
    """One optimizer step per round (accumulate), no gradient clip: the step's gradient is the loss's."""

    def __init__(self, weight=None, drop_row=None):
        super().__init__(G2RPOConfig(eta_step_list=(0, 2), update="accumulate", optim=OptimConfig(max_grad_norm=1e9)))
        self.weight, self.drop_row = weight, drop_row

    def loss_weight(self, tr, rows):
        return None if self.weight is None else self.weight(rows)

    def update_groups(self, rollout, gen):
        groups = super().update_groups(rollout, gen)
        if self.drop_row is not None:
            rollout.transitions.mask = rollout.transitions.trained().clone()
            rollout.transitions.mask[self.drop_row] = False
        return groups


def one_round(method):
    """The round's metrics, the gradient of its one optimizer step and the weights after it."""
    t = trainer(method, shared())
    params, step, grads = [p for p in t.policy.parameters() if p.requires_grad], t.opt.step, []

    def capture(*a, **kw):
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])
        return step(*a, **kw)

    t.opt.step = capture
    metrics = t.step()
    assert metrics["optimizer_steps"] == len(grads) == 1
    return metrics, grads[0], [p.detach().clone() for p in params]


def test_loss_weight_none_is_ones_and_two_doubles_the_loss():
    base, g, w = one_round(Weighted())
    ones, g1, w1 = one_round(Weighted(lambda rows: torch.ones(len(rows), 1)))
    assert ones["loss"] == base["loss"] != 0
    assert all(torch.equal(a, b) for a, b in zip(g + w, g1 + w1))
    two, g2, _ = one_round(Weighted(lambda rows: torch.full((len(rows), 3), 2.0)))  # (L, n): n = G members
    assert two["loss"] == 2 * base["loss"]
    assert all(torch.equal(b, 2 * a) for a, b in zip(g, g2)) and any(a.abs().sum() > 0 for a in g)


def test_loss_weight_zero_on_a_row_leaves_it_out_of_the_numerator_only():
    row = 1
    zero, gz, _ = one_round(Weighted(lambda rows: (rows != row).float()[:, None]))
    masked, gm, _ = one_round(Weighted(drop_row=row))
    n_all, n_kept = 2 * 2 * 3, (2 * 2 - 1) * 3  # (prompt, k) rows x G members; the masked step divides by fewer
    # the loss is a sum of n_kept terms of the size of an advantage (~1) that cancels to ~1e-6 (z-scored advantages,
    # ratio 1): its rounding is absolute, ~n_kept fp32 ulps, and any change of summation order (threads) moves a
    # relative check of the near-zero sum by percents
    assert zero["loss"] * n_all == pytest.approx(masked["loss"] * n_kept, rel=0, abs=1e-5 * n_kept)
    a, b = (torch.cat([t.reshape(-1) for t in g]) for g in (gz, gm))  # the masked step's batch has one row fewer
    assert (a * n_all - b * n_kept).norm() < 1e-5 * (b * n_kept).norm()


class Counting(G2RPO):
    """A method with state of its own: the rounds whose advantages it computed."""

    def __init__(self):
        super().__init__(G2RPOConfig(eta_step_list=(0,)))
        self.rounds = 0

    def advantages(self, rollout, rewards, weights):
        self.rounds += 1
        return super().advantages(rollout, rewards, weights)

    def state_dict(self):
        return {"rounds": self.rounds}

    def load_state_dict(self, state):
        self.rounds = state["rounds"]


def test_method_state_is_saved_only_when_it_has_some_and_restored(tmp_path):
    sh = shared()
    t = trainer(Counting(), sh)
    t.train(2)
    torch.save(t.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["method"] == {"rounds": 2}
    resumed = trainer(Counting(), sh)
    resumed.load_state_dict(state)
    assert resumed.method.rounds == 2 and resumed.round_idx == 2
    old = trainer(Counting(), sh)
    old.load_state_dict({k: v for k, v in state.items() if k != "method"})  # saved before methods had state
    assert old.method.rounds == 0 and old.round_idx == 2
    assert "method" not in trainer(G2RPO(G2RPOConfig(eta_step_list=(0,))), sh).state_dict()
