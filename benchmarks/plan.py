"""From flags to the list of runs: methods x variants x seeds, with each run's rounds under the budget."""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field

from g2rpo.config import int_list
from g2rpo.method import Method, nfe_per_round
from g2rpo.presets import Preset
from g2rpo.registry import METHODS, entry, make_method

BASE = "base"
"""The untrained base model, evaluated once as a row of every table."""


class PlanError(ValueError):
    """A flag that cannot make a valid plan; reported as one line with exit code 2."""


@dataclass
class RunSpec:
    """One training run (or the base model's evaluation)."""

    method: str
    variant: str
    """'default', or the swept knob and its value, e.g. 'granular_list=1,3' (``Sweep``)."""
    seed: int
    rounds: int
    overrides: dict = field(default_factory=dict)
    """Knobs set on top of the preset's (a sweep's value, typed)."""
    lr: float | None = None
    """Learning rate for this run instead of the preset's (--lr); weight decay and clipping stay."""

    def build(self, preset: Preset) -> Method:
        return make_method(self.method, preset.knobs, self.lr, **self.overrides)


def parse_value(tp, text: str, where: str):
    """``text`` as a value of the type ``tp`` a config field declares: int, float, str, bool, an Enum, a tuple of ints
    (``int_list``: '1,2' or '0-3'), or any of these ``| None`` ('none'). PlanError, one line, for anything else."""
    text = text.strip()
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() == "none":
            return None
        rest = [t for t in args if t is not type(None)]
        if len(rest) == 1:
            return parse_value(rest[0], text, where)
    try:
        if typing.get_origin(tp) is tuple and args == (int, ...):
            if not text:
                raise ValueError("empty set")
            return int_list(text)
        if tp is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"expected true or false, got {text!r}")
            return text.lower() in ("true", "1")
        if tp in (int, float, str) or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            return tp(text)
    except ValueError as e:
        raise PlanError(f"{where}: {e}") from None
    raise PlanError(f"{where}: a knob of type {getattr(tp, '__name__', tp)} cannot be set from the command line")


def shown(value) -> str:
    """A knob's value as a variant tag shows it: '1,2' for a tuple, 'none', an Enum's value."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value.value if isinstance(value, enum.Enum) else value)


def parse_knob(method: str, knob: str, text: str, flag: str):
    """One knob of a registered method from the command line, typed by its config's field."""
    try:
        e = entry(method)
    except KeyError as err:
        raise PlanError(f"{flag}: {err.args[0]}") from None
    hints = typing.get_type_hints(e.method.config_class)
    if knob not in hints:
        raise PlanError(f"{flag}: {method} has no knob {knob!r}; its knobs: {', '.join(hints)}")
    if knob in e.fixed:
        raise PlanError(f"{flag}: {method} fixes {knob} = {shown(e.fixed[knob])}")
    return parse_value(hints[knob], text, f"{flag} {method}.{knob}")


@dataclass
class Sweep:
    """One knob of one method at several values, the other knobs at the preset's: one variant per value."""

    method: str
    knob: str
    values: list

    def variants(self) -> list[tuple[str, dict]]:
        return [(f"{self.knob}={shown(v)}", {self.knob: v}) for v in self.values]


def parse_sweep(text: str, flag: str = "--sweep") -> Sweep:
    """'g2rpo.granular_list=1;1,2;1,2,3' -> Sweep('g2rpo', 'granular_list', [(1,), (1, 2), (1, 2, 3)])."""
    target, sep, values = text.partition("=")
    method, dot, knob = target.strip().rpartition(".")
    if not sep or not dot or not method or not knob:
        raise PlanError(f"{flag}: expected METHOD.KNOB=V1;V2;..., got {text!r}")
    parts = values.split(";")
    if any(not v.strip() for v in parts):
        raise PlanError(f"{flag}: empty value in {text!r}")
    return Sweep(method, knob, [parse_knob(method, knob, v, flag) for v in parts])


ALIASES = {"--granular-sets": "g2rpo.granular_list", "--eta-step-sets": "g2rpo.eta_step_list"}
"""The paper's ablations, one flag away: ``--granular-sets 1;1,2`` is ``--sweep g2rpo.granular_list=1;1,2``."""


def make_plan(preset: Preset, methods: list[str], seeds: int, rounds: int, budget: str,
              sweeps: list[Sweep] = (), lr: float | None = None) -> list[RunSpec]:
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
    variants += [(sw.method, tag, over) for sw in sweeps for tag, over in sw.variants()]
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
