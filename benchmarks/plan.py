"""From flags to the list of runs: methods x variants x seeds, with each run's rounds under the budget."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from g2rpo.config import int_list
from g2rpo.method import Method, nfe_per_round
from g2rpo.presets import Preset
from g2rpo.registry import METHODS, make_method

BASE = "base"
"""The untrained base model, evaluated once as a row of every table."""


class PlanError(ValueError):
    """A flag that cannot make a valid plan; reported as one line with exit code 2."""


@dataclass
class RunSpec:
    """One training run (or the base model's evaluation)."""

    method: str
    variant: str
    """'default', or the ablated knob, e.g. 'granular_list=1,3'."""
    seed: int
    rounds: int
    overrides: dict = field(default_factory=dict)
    """Knobs set on top of the preset's (ablations)."""
    lr: float | None = None
    """Learning rate for this run instead of the preset's (--lr); weight decay and clipping stay."""

    def build(self, preset: Preset) -> Method:
        return make_method(self.method, preset.knobs, self.lr, **self.overrides)


def parse_int_sets(text: str, flag: str) -> list[tuple[int, ...]]:
    """'1;1,2;0-3' -> [(1,), (1, 2), (0, 1, 2, 3)]: sets of ``int_list`` separated by ';'. Rejects junk, duplicates
    and empty sets."""
    sets = []
    for part in text.split(";"):
        if not part.strip():
            raise PlanError(f"{flag}: empty set in {text!r}")
        try:
            sets.append(int_list(part))
        except ValueError as e:
            raise PlanError(f"{flag}: {e}") from None
    return sets


def make_plan(preset: Preset, methods: list[str], seeds: int, rounds: int, budget: str,
              granular_sets: list[tuple[int, ...]], eta_step_sets: list[tuple[int, ...]],
              lr: float | None = None) -> list[RunSpec]:
    if not methods:
        raise PlanError("--methods is empty; choose from " + ", ".join(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PlanError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if seeds < 1 or rounds < 1:
        raise PlanError("--seeds and --rounds must be >= 1")
    if lr is not None and not 0 < lr < 1:
        raise PlanError(f"--lr must be in (0, 1), got {lr}")
    if budget not in ("rounds", "nfe"):
        raise PlanError(f"--budget must be 'rounds' or 'nfe', got {budget!r}")
    variants = [(m, "default", {}) for m in dict.fromkeys(methods)]
    variants += [("g2rpo", "granular_list=" + ",".join(map(str, s)), {"granular_list": s}) for s in granular_sets]
    variants += [("g2rpo", "eta_step_list=" + ",".join(map(str, s)), {"eta_step_list": s}) for s in eta_step_sets]
    shared = dataclasses.replace(preset.shared, rounds=rounds)
    planned, seen = [], set()
    for name, variant, over in variants:
        try:
            m = make_method(name, preset.knobs, lr, **over)
            m.validate(shared)
        except (ValueError, TypeError) as e:
            raise PlanError(f"{name} {variant}: {e}") from None
        key = (type(m).__name__, repr(dataclasses.asdict(m.cfg)))
        if key in seen:  # an ablation point equal to a run already planned is not run twice
            continue
        seen.add(key)
        planned.append((name, variant, over, m))
    ref = nfe_per_round(planned[0][3], shared)
    runs = [RunSpec(BASE, "default", 0, 0)]
    for name, variant, over, m in planned:
        r = rounds if budget == "rounds" else max(1, round(rounds * ref / nfe_per_round(m, shared)))
        runs += [RunSpec(name, variant, s, r, over, lr) for s in range(seeds)]
    return runs


def describe(runs: list[RunSpec], preset: Preset) -> list[dict]:
    """One object per (method, variant): the cost accounting per prompt and round, rounds and seeds."""
    rows: dict[tuple[str, str], dict] = {}
    for spec in runs:
        if spec.method == BASE:
            continue
        key = (spec.method, spec.variant)
        if key in rows:
            rows[key]["seeds"] += 1
            continue
        m = spec.build(preset)
        shared = dataclasses.replace(preset.shared, rounds=spec.rounds)
        c = m.cost(shared)
        n, steps = shared.prompts_per_round * shared.num_generations, m.optimizer_steps(shared)
        rows[key] = {"method": spec.method, "variant": spec.variant, "nfe_rollout_per_prompt": c.nfe_rollout,
                     "nfe_rollout_per_prompt_official": c.nfe_rollout_official or c.nfe_rollout,
                     "nfe_train_per_prompt": c.nfe_train, "nfe_reference_per_prompt": c.nfe_reference,
                     "images_scored_per_prompt": c.images_scored, "nfe_per_round": nfe_per_round(m, shared),
                     "nfe_per_round_official": nfe_per_round(m, shared, official=True),
                     "optimizer_steps_per_round": steps, "samples_per_optimizer_step": -(-n // steps),
                     "lora": m.lora(shared),
                     "rounds": spec.rounds, "total_nfe": spec.rounds * nfe_per_round(m, shared), "seeds": 1,
                     "knobs": {k: v for k, v in dataclasses.asdict(m.cfg).items() if k != "optim"} | {"lr": m.optim.lr}}
    return list(rows.values())
