"""Exponential moving average of the trained weights, as Flow-GRPO keeps one for evaluation (``flow_grpo/ema.py``).

After optimizer step s (s = 1, 2, ... counted over the whole run) the average moves only when
(s + 1) % update_step_interval == 0, by shadow += (1 - d_s)·(w - shadow) with the warm-up decay
d_s = min((1 + s) / (10 + s), decay). The official code calls this after every per-GPU training micro-batch with
the current step, so at a moving step it is applied once per micro-batch since the last optimizer step (the
weights do not change in between); ``repeats`` is that count. The shadows start as the weights the trainer begins
with (the base model, or its zero-initialised LoRA adapter) and live where the weights do (DTensor shards under FSDP).
Training always uses the live weights; evaluation and saved models use the average (``EMA.applied``).

DanceGRPO's ``--use_ema`` (off by default, so off here too) is ``EMAConfig(decay=0.995, update_step_interval=1,
warmup=False)``: shadow = 0.995·shadow + 0.005·w after every optimizer step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class EMAConfig:
    """Weight averaging for evaluation; a method with ``ema=None`` evaluates its live weights."""

    decay: float = 0.9
    """Cap of the decay d_s = min((1 + s) / (10 + s), decay) (official 0.9)."""
    update_step_interval: int = 8
    """The average moves after optimizer steps s with (s + 1) % interval == 0 (official 8: ~20 x 8 = 160 steps)."""
    repeats: int = 1
    """Updates applied at a moving step: the official code applies one per per-GPU micro-batch of the step."""
    warmup: bool = True
    """Ramp the decay as (1 + s) / (10 + s) up to ``decay``; False = ``decay`` from the first step (DanceGRPO)."""

    def __post_init__(self):
        if not 0 <= self.decay < 1 or self.update_step_interval < 1 or self.repeats < 1:
            raise ValueError(f"ema needs 0 <= decay < 1, update_step_interval >= 1 and repeats >= 1, got {self}")


def ema_decay(step: int, cap: float, warmup: bool = True) -> float:
    """d_s of optimizer step ``step``: the warm-up ramp (1 + s) / (10 + s) capped at ``cap``, or ``cap`` itself."""
    return min((1 + step) / (10 + step), cap) if warmup else cap


def moves_at(step: int, cfg: EMAConfig) -> bool:
    return (step + 1) % cfg.update_step_interval == 0


@contextlib.contextmanager
@torch.no_grad()
def swapped(params: dict[str, torch.nn.Parameter], weights: dict[str, torch.Tensor]):
    """The block sees ``weights`` in ``params``; afterwards the live values are back bit for bit, also on an error."""
    live = {n: p.detach().clone() for n, p in params.items()}
    try:
        for n, p in params.items():
            p.copy_(weights[n])
        yield
    finally:
        for n, p in params.items():
            p.copy_(live[n])


class EMA:
    """Shadow copies of named parameters, moved by ``step`` and swapped in by ``applied``."""

    def __init__(self, params: dict[str, torch.nn.Parameter], cfg: EMAConfig) -> None:
        self.cfg = cfg
        self.shadow = {n: p.detach().clone() for n, p in params.items()}

    @torch.no_grad()
    def step(self, params: dict[str, torch.nn.Parameter], optimizer_step: int) -> bool:
        """Move the average after optimizer step ``optimizer_step`` if it is a moving step; whether it moved."""
        if not moves_at(optimizer_step, self.cfg):
            return False
        keep = ema_decay(optimizer_step, self.cfg.decay, self.cfg.warmup)
        for n, p in params.items():
            s = self.shadow[n]
            for _ in range(self.cfg.repeats):
                s.add_((1 - keep) * (p.detach() - s))
        return True

    def applied(self, params: dict[str, torch.nn.Parameter]):
        """The block sees the averaged weights; afterwards the live ones are back bit for bit, also on an error."""
        return swapped(params, self.shadow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"the saved state has no weight average for {len(missing)} parameters (first: "
                             f"{missing[0]}); it was written without EMA: start the run again or set ema=None")
        with torch.no_grad():
            for n, s in self.shadow.items():
                s.copy_(state[n])
