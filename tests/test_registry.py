"""The method registry: methods register themselves, a preset's shared rules reach every registered method, and the
runner and tables take every method from it (no list of names to extend)."""
import dataclasses
import json

import pytest

import g2rpo.registry as registry

from baselines.dancegrpo import DanceGRPO, DanceGRPOConfig
from benchmarks.plan import PlanError, make_plan, parse_sweep
from benchmarks.run import main as run_main, parse_args, resolve
from benchmarks.table import names, rank, title
from g2rpo.config import OptimConfig
from g2rpo.presets import ALL_FAMILIES, POCKET_LR, POCKET_LRS, preset
from g2rpo.registry import METHODS, default_methods, entry, knobs_for, make_method, register, table_order
from tests.helpers import run_module


@dataclasses.dataclass
class ToyConfig(DanceGRPOConfig):
    """A method added later: DanceGRPO's knobs, one of its own, an official rate unlike the pocket one."""

    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=7e-3))
    toy_knob: float = 0.5
    """A knob of its own, swept below."""


class Toy(DanceGRPO):
    config_class = ToyConfig


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(registry, "METHODS", dict(METHODS))  # registered for this test only
    e = registry.register("toy", Toy, "Toy-GRPO")
    for module in ("benchmarks.plan", "benchmarks.run", "benchmarks.table"):
        monkeypatch.setattr(f"{module}.METHODS", registry.METHODS, raising=False)
    return e


def test_every_registered_method_builds_with_its_name():
    assert {"g2rpo", "g2rpo-wo-mgai", "flowgrpo", "dancegrpo", "mixgrpo"} <= set(METHODS)
    for name in METHODS:
        assert make_method(name).name == name
    assert make_method("g2rpo-wo-mgai", {"g2rpo": {"granular_list": (1, 2, 3)}}).cfg.granular_list == (1,)  # fixed
    with pytest.raises(ValueError, match="registered twice"):
        register("g2rpo", type(make_method("g2rpo")), "again")
    with pytest.raises(KeyError, match="unknown method 'ppo'"):
        entry("ppo")


def test_tables_name_and_order_methods_from_the_registry():
    assert table_order()[-2:] == ["g2rpo-wo-mgai", "g2rpo"]  # G2RPO last, as in the paper's tables
    assert list(names())[0] == "base" and title("flowgrpo") == "Flow-GRPO" and title("gone") == "gone"
    assert rank("dancegrpo") < rank("flowgrpo") < rank("g2rpo") < rank("gone")


def test_the_pocket_learning_rate_reaches_every_registered_method(toy):
    """The equal-settings rule: on the pocket preset every family trains at the rate benchmarks.sweep selected for it,
    and a family it has not swept (one added later) at the preset's rate, never at its official one."""
    p = preset("pocket")
    for name, e in METHODS.items():
        assert make_method(name, p.knobs).optim.lr == POCKET_LRS.get(e.family, POCKET_LR), name
    assert make_method("toy").optim.lr == 7e-3 and make_method("toy", p.knobs).optim.lr == POCKET_LR
    assert knobs_for("toy", p.knobs) == p.knobs[ALL_FAMILIES]
    assert make_method("toy", p.knobs, lr=1e-4).optim.lr == 1e-4  # --lr still wins


def test_a_registered_method_is_in_the_default_plan_and_sweepable(toy):
    p, runs, _ = resolve(parse_args(["--sweep", "toy.toy_knob=0.25;0.5"]))
    planned = {(r.method, r.variant) for r in runs}
    assert {(n, "default") for n in default_methods()} <= planned and ("toy", "toy_knob=0.25") in planned
    assert "toy" in default_methods() and {r.method for r in resolve(parse_args(["--methods", "all"]))[1]} == \
        {"base"} | set(registry.METHODS)
    assert ("toy", "toy_knob=0.5") not in planned  # the default's value: not run twice
    assert rank("toy") < rank("g2rpo") and title("toy") == "Toy-GRPO"
    with pytest.raises(PlanError, match="no knob 'nope'"):
        parse_sweep("toy.nope=1")
    assert run_main(["--dry-run", "--methods", "toy"]) == 0
    with pytest.raises(PlanError, match="unknown method"):
        make_plan(p, ["toy2"], 1, 1, "rounds")


def test_sweep_tables_group_runs_by_the_one_knob_they_differ_in(tmp_path):
    """Table 2 holds G2RPO's default, its Lambda variants and w/o MGAI (Lambda = {1}) but not the M variant; the M table
    the reverse; any other method's sweep gets its own table; a member's view of the same rows makes no second one."""
    import pandas as pd

    from benchmarks.table import sweep_tables

    def run(method, variant, seed, x, **knobs):
        return {"method": method, "variant": variant, "seed": seed, "eval/x": x} | {f"knobs.{k}": v for k, v in knobs.items()}

    rows = [run("base", "default", 0, 0.0)]
    for s in range(2):
        rows += [run("g2rpo", "default", s, 2 + s, granular_list="1,2", eta_step_list="0,1,2,3"),
                 run("g2rpo-wo-mgai", "default", s, 1 + s, granular_list="1", eta_step_list="0,1,2,3"),
                 run("g2rpo", "granular_list=1,2,3", s, 3 + s, granular_list="1,2,3", eta_step_list="0,1,2,3"),
                 run("g2rpo", "eta_step_list=0-1", s, 9 + s, granular_list="1,2", eta_step_list="0,1"),
                 run("dancegrpo", "default", s, 5 + s, eta="0.3"), run("dancegrpo", "eta=0.5", s, 7 + s, eta="0.5")]
    files = sweep_tables(pd.DataFrame(rows), {"eval/x": "x"}, tmp_path)
    assert sorted(f.name for f in files if f.suffix == ".csv") == [
        "table2_granularity.csv", "table_eta_steps.csv", "table_sweep_dancegrpo_eta.csv"]
    lam = pd.read_csv(tmp_path / "table2_granularity.csv")
    assert list(lam["Λ"]) == ["{1}", "{1,2}", "{1,2,3}"] and list(lam["eval/x|mean"]) == [1.5, 2.5, 3.5]
    assert list(pd.read_csv(tmp_path / "table_eta_steps.csv")["M"]) == ["{0,1}", "{0,1,2,3}"]
    assert list(pd.read_csv(tmp_path / "table_sweep_dancegrpo_eta.csv")["eval/x|mean"]) == [5.5, 7.5]


@pytest.mark.parametrize("name", ["paper", "pocket"])
def test_the_dry_run_shows_every_registered_methods_cost(name):
    """One dry run of every registered method: its per-prompt numbers are the method's cost() (and the official count
    where it differs), the knobs its config's."""
    r = run_module("benchmarks.run", "--preset", name, "--methods", "all", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["method"]: x for x in json.loads(r.stdout)}
    assert set(rows) == set(METHODS)
    p = preset(name)
    for method, row in rows.items():
        c = make_method(method, p.knobs).cost(p.shared)
        assert (row["nfe_rollout_per_prompt"], row["nfe_train_per_prompt"], row["nfe_reference_per_prompt"],
                row["images_scored_per_prompt"]) == (c.nfe_rollout, c.nfe_train, c.nfe_reference, c.images_scored), method
        assert row["nfe_rollout_per_prompt_official"] == (c.nfe_rollout_official or c.nfe_rollout), method
