"""The benchmark runner end to end (subprocess, temporary MLflow store) and its flag checking."""
import dataclasses
import json
import re

import pandas as pd
import pytest
import torch

from benchmarks.plan import PlanError, Sweep, make_plan, parse_knob, parse_sweep
from g2rpo.presets import preset
from baselines.flowgrpo import MultiReward
from g2rpo.registry import default_methods, make_method
from tests.helpers import run_module



run = run_module


def test_dry_run_json_is_the_cost_accounting():
    r = run("benchmarks.run", "--preset", "paper", "--dry-run", "--json", "--granular-sets", "1;1,2", "--budget", "nfe")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    p = preset("paper")
    assert {x["method"] for x in rows} == set(default_methods())
    for x in rows:
        over = {"granular_list": tuple(int(v) for v in x["variant"].split("=")[1].split(","))} if "=" in x["variant"] else {}
        c = make_method(x["method"], p.knobs, **over).cost(p.shared)
        assert (x["nfe_rollout_per_prompt"], x["nfe_train_per_prompt"], x["images_scored_per_prompt"]) == \
               (c.nfe_rollout, c.nfe_train, c.images_scored)
    g2 = next(x for x in rows if x["method"] == "g2rpo" and x["variant"] == "default")
    # Lambda = {1,2,3}, batched rollout: 2188 official, less the SDE steps (96) and the shared completion points (384)
    assert g2["nfe_rollout_per_prompt"] == 1708 and g2["rounds"] == 300
    # equal-NFE budget: every row spends about the first method's total
    assert all(abs(x["total_nfe"] - g2["total_nfe"]) <= x["nfe_per_round"] for x in rows)
    assert "granular_list=1,2" in {x["variant"] for x in rows}  # {1} is the w/o-MGAI run, not run twice


def test_the_default_run_is_the_scenes_task_on_the_default_methods():
    from benchmarks.run import parse_args, resolve

    p, runs, _ = resolve(parse_args([]))
    assert p.shared.model == "pocket-scenes" and p.eval.accuracy_threshold is not None
    assert {r.method for r in runs} - {"base"} == set(default_methods())


def test_flowgrpo_sd35_preset_is_a_valid_plan_for_every_method():
    """Flow-GRPO's own SD3.5 setting: every method validates against it, and its Flow-GRPO knobs are the official ones."""
    r = run("benchmarks.run", "--preset", "flowgrpo-sd35", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert {x["method"] for x in json.loads(r.stdout)} == set(default_methods())
    p = preset("flowgrpo-sd35")
    m = make_method("flowgrpo", p.knobs)
    assert (m.cfg.beta, m.ema.decay, m.ema.update_step_interval, m.ema.repeats) == (0.01, 0.9, 8, 2)


def test_lr_flag_sets_every_methods_learning_rate_only():
    r = run("benchmarks.run", "--dry-run", "--json", "--lr", "1e-4")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == len(default_methods()) and all(x["knobs"]["lr"] == 1e-4 for x in rows)
    p = preset("pocket")
    built = make_plan(p, ["dancegrpo"], 1, 2, "rounds", lr=1e-4)[1].build(p)
    official = make_method("dancegrpo", p.knobs)
    assert built.optim == dataclasses.replace(official.optim, lr=1e-4) and built.cfg.optim is built.optim


@pytest.mark.parametrize("args,msg", [
    (["--methods", "g2rpo,ppo"], "unknown method"),
    (["--methods", ","], "--methods is empty"),
    (["--granular-sets", "1;0"], "granular_list"),
    (["--granular-sets", "1,1"], "duplicate"),
    (["--granular-sets", "1;a"], "not an integer"),
    (["--eta-step-sets", "0-20"], "eta_step_list"),
    (["--preset", "huge"], "unknown preset"),
    (["--budget", "time"], "--budget"),
    (["--seeds", "0"], "--seeds"),
    (["--inference-steps", "10,x"], "--inference-steps"),
    (["--lr", "0"], "--lr"),
    (["--preset", "scenes", "--skills", "countin"], "unknown skill"),
    (["--preset", "scenes", "--skills", "single_object"], "heldout split empty"),
    (["--preset", "pocket", "--skills", "counting"], "only the scenes tier"),
])
def test_bad_flags_fail_fast(args, msg, capsys, tmp_path):
    from benchmarks.run import main

    assert main(["--preset", "smoke", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # nothing written before the flags are valid


def test_bad_flag_exit_code_through_the_entry_point():
    r = run("benchmarks.run", "--preset", "smoke", "--methods", "ppo")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown method") and "Traceback" not in r.stderr


def test_unwritable_out_and_broken_store(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("benchmarks.run", "--preset", "smoke", "--out", str(blocker / "sub"))
    assert r.returncode == 2 and "not writable" in r.stderr
    bad = tmp_path / "store.db"
    bad.write_text("this is not a database")
    r = run("benchmarks.run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--tracking-uri", f"sqlite:///{bad}")
    assert r.returncode == 2 and "cannot open the MLflow store" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert bad.read_text() == "this is not a database"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    r = run("benchmarks.run", "--preset", "smoke", "--out", str(out), "--granular-sets", "1;1,2;1,3", "--inference-steps", "3",
            cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


@pytest.mark.slow  # the smoke benchmark run (module fixture)
def test_smoke_run_writes_tables_and_mlflow_runs(smoke):
    out, r = smoke
    for stem in ["table1_main", "paired_vs_base", "table2_granularity", "table3_steps"]:
        for ext in ["md", "csv", "tex"]:
            assert (out / f"{stem}.{ext}").stat().st_size > 0, (stem, ext)
    for f in ["curves.png", "samples.png", "README.md", "mlflow.db"]:
        assert (out / f).exists(), f
    assert "python -m benchmarks.run --preset smoke" in (out / "README.md").read_text()
    models = sorted((out / "models").glob("*.safetensors"))  # every trained model, for python -m eval.evaluate
    assert len(models) == 5 * 2 + 2 and all(m.with_suffix(".json").is_file() for m in models)
    weights = {json.loads(m.with_suffix(".json").read_text())["weights"] for m in models if m.name.startswith("flowgrpo")}
    assert weights == {"ema"}  # Flow-GRPO evaluates and saves its weight average, as the official code
    assert "Flow-GRPO: scores of the EMA of the weights" in (out / "table1_main.md").read_text()
    assert "NFE/round (official)" in (out / "table1_main.md").read_text()  # G2RPO's count as the paper's beside ours
    sidecars = {json.loads(m.with_suffix(".json").read_text())["settings"]["lora"] for m in models if m.name.startswith("flowgrpo")}
    assert sidecars == {"flowgrpo-flux"}  # Flow-GRPO trains its LoRA (the smoke preset does not say otherwise)
    table = pd.read_csv(out / "table1_main.csv")
    assert list(table.Method) == ["Base model", "DanceGRPO", "MixGRPO", "Flow-GRPO", "G²RPO w/o MGAI", "G²RPO"]
    assert (table["eval/brightness|count"].iloc[1:] == 2).all()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [x for x in runs if x.data.tags.get("kind") == "child"]
    assert len(children) == 1 + 5 * 2 + 2  # base, 5 methods x 2 seeds, Lambda={1,3} x 2 seeds ({1}, {1,2} already run)
    digests = {x.data.tags["shared_digest"] for x in children if x.data.tags["method"] != "base"}
    assert len(digests) == 2  # one shared block per seed, identical across methods
    g2 = next(x for x in children if x.data.tags["method"] == "g2rpo" and x.data.tags["variant"] == "default")
    assert g2.data.params["knobs.eta_step_list"] == "0,1,2" and "git_commit" in g2.data.tags
    hist = client.get_metric_history(g2.info.run_id, "train/reward/brightness")
    assert len(hist) == 2 and "eval/brightness" in g2.data.metrics and "eval_3steps/brightness" in g2.data.metrics
    assert "done in" in r.stdout and "mlflow ui --backend-store-uri" in r.stdout
    parent = next(x for x in runs if x.data.tags.get("kind") == "parent")
    assert 0 < parent.data.metrics["peak_rss_gb"] < 24 and parent.data.metrics["wall_s"] > 0
    assert "peak RSS" in (out / "README.md").read_text()


@pytest.mark.slow  # the smoke benchmark run (module fixture)
def test_smoke_run_reports_precision_curves_and_guards(smoke):
    out, _ = smoke
    prec = pd.read_csv(out / "precision.csv")
    assert set(prec.method) == {"base"} | set(default_methods())
    assert (prec.mean_low <= prec["mean"]).all() and (prec["mean"] <= prec.mean_high).all()
    assert {"gap/brightness", "brightness"} <= set(prec.reward)  # the alignment gap of every in-domain reward
    poi = pd.read_csv(out / "improvement_brightness.csv")
    assert len(poi) == 5 * 4 and poi.poi.between(0, 1).all() and (poi.min_detectable_diff > 0).all()
    pairs = poi.set_index(["method", "versus"]).poi
    assert all(abs(pairs[(a, b)] + pairs[(b, a)] - 1) < 1e-9 for a, b in pairs.index)  # P(X > Y) + P(Y > X) = 1
    floor = pd.read_csv(out / "noise_floor.csv")
    assert set(floor.reward) >= {"brightness", "redness", "contrast"} and (floor.sd_per_prompt > 0).all()
    assert set(pd.read_csv(out / "guards.csv").guard) == {"saturation", "brightness", "colour_entropy"}
    readme = (out / "README.md").read_text()
    assert "## Summary" in readme and "smallest difference of means" in readme and "Noise floor (brightness)" in readme
    eq = pd.read_csv(out / "equal_nfe.csv")
    assert len(eq) == 5 and eq.budget_nfe.nunique() == 1 and (eq.rounds_at_budget <= 2).all()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    run = client.search_runs([exp.experiment_id], "tags.method = 'g2rpo' and tags.variant = 'default'")[0]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "curve/heldout/brightness")]
    assert sorted(steps) == [0, 1, 2]  # before round 0, after every round (curve_every 1), the final model
    nfe = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "curve/cum_nfe")}
    assert nfe[0] == 0 and nfe[2] == run.data.metrics["cost/total_nfe"]
    base = client.search_runs([exp.experiment_id], "tags.method = 'base'")[0]
    assert base.data.metrics["curve/noise_floor/brightness"] > 0  # the curve's own floor, from the base model
    assert base.data.metrics["time/train_s"] < 0.1  # ... scored as curve time: the base model trains for no time
    sig = pd.read_csv(out / "time_to_signal.csv")
    assert len(sig) == 5 and (sig.seeds_reached <= sig.seeds).all() and (sig.floor > 0).all()
    assert "s to signal" in (out / "table1_main.md").read_text()


@pytest.mark.slow  # the smoke benchmark run (module fixture)
def test_tables_rebuild_from_mlflow_alone(smoke, tmp_path):
    out, _ = smoke
    r = run("benchmarks.table", "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--experiment", "g2rpo-bench/smoke",
            "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for f in ["table1_main.md", "table1_main.csv", "paired_vs_base.csv", "table2_granularity.md", "table3_steps.tex",
              "precision.csv", "noise_floor.csv", "equal_nfe.csv", "guards.md", "time_to_signal.csv"]:
        assert (tmp_path / f).read_text() == (out / f).read_text(), f


@pytest.mark.slow  # the smoke benchmark run (module fixture)
def test_the_comparison_is_on_the_parent_run(smoke, tmp_path):
    """Every table as an MLflow table equal to its CSV (also after a rebuild published it again), every figure as a
    PNG, the README, a description, the experiment opening as model training, and tags to group child runs by."""
    import mlflow
    from PIL import Image

    out, _ = smoke
    uri = f"sqlite:///{out / 'mlflow.db'}"
    assert run("benchmarks.table", "--tracking-uri", uri, "--experiment", "g2rpo-bench/smoke", "--out",
               str(tmp_path / "again")).returncode == 0  # publishes a second time: must replace, not append
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.search_runs([exp.experiment_id], "tags.kind = 'parent'")[0]
    pid = parent.info.run_id
    assert "python -m benchmarks.run --preset smoke" in parent.data.tags["mlflow.note.content"]
    assert "g2rpo, g2rpo-wo-mgai, flowgrpo, dancegrpo, mixgrpo" in parent.data.tags["mlflow.note.content"]
    names = {a.path for folder in ("tables", "figures") for a in client.list_artifacts(pid, folder)}
    names |= {a.path for a in client.list_artifacts(pid)}
    csvs = sorted(out.glob("*.csv"))
    assert len(csvs) >= 10 and "README.md" in names
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=exp.experiment_id)  # as a user opening the experiment would
    for f in csvs:
        assert f"tables/{f.stem}.json" in names and f"tables/{f.stem}.md" in names, f.name
        got = mlflow.load_table(f"tables/{f.stem}.json", run_ids=[pid])
        pd.testing.assert_frame_equal(got, pd.read_csv(f), check_dtype=False, rtol=1e-8)
    shown = {x["path"] for x in json.loads(client.get_run(pid).data.tags["mlflow.loggedArtifacts"])}
    assert shown == {f"tables/{f.stem}.json" for f in csvs}
    for fig in ("curves.png", "samples.png"):
        assert f"figures/{fig}" in names
        Image.open(client.download_artifacts(pid, f"figures/{fig}", str(tmp_path))).verify()
    for c in client.search_runs([exp.experiment_id], "tags.kind = 'child'"):
        assert {"method", "variant", "seed", "tier", "preset", "shared_digest"} <= set(c.data.tags), c.info.run_id


@pytest.mark.slow  # the smoke benchmark run (module fixture)
def test_tables_rebuild_from_the_parent_run_when_child_runs_are_gone(smoke, tmp_path):
    import shutil

    import mlflow

    out, _ = smoke
    store = tmp_path / "store"
    shutil.copytree(out, store, ignore=shutil.ignore_patterns("checkpoints", "models"))
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    for c in client.search_runs([exp.experiment_id], "tags.kind = 'child'"):
        client.delete_run(c.info.run_id)
    r = run("benchmarks.table", "--tracking-uri", uri, "--experiment", "g2rpo-bench/smoke", "--out", str(tmp_path / "re"))
    assert r.returncode == 0, r.stderr
    assert "rebuilt from the tables logged on parent run" in r.stdout
    for f in ("table1_main.md", "paired_vs_base.md", "curves.png"):
        assert (tmp_path / "re" / f).read_bytes() == (out / f).read_bytes(), f
    assert "## Summary" in (tmp_path / "re" / "README.md").read_text()  # the last build's (its store path may differ)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "re" / "precision.csv"), pd.read_csv(out / "precision.csv"),
                                  check_dtype=False, rtol=1e-8)


def test_parse_sweep_types_each_knob_by_its_config():
    assert parse_sweep("g2rpo.granular_list=1;1,2; 1,2,3") == Sweep("g2rpo", "granular_list", [(1,), (1, 2), (1, 2, 3)])
    assert parse_sweep("g2rpo.eta_step_list=0-3;4-7").values == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert parse_sweep("dancegrpo.eta=0.3;0.5").values == [0.3, 0.5]
    assert parse_sweep("mixgrpo.window_size=2;4").values == [2, 4]
    assert parse_sweep("flowgrpo.init_same_noise=true;0").values == [True, False]
    assert parse_sweep("flowgrpo.num_rollout_steps=none;8").values == [None, 8]
    sw = parse_sweep("flowgrpo.multi_reward=sum_advantages")
    assert sw.values == [MultiReward.SUM_ADVANTAGES] and sw.variants() == [("multi_reward=sum_advantages",
                                                                          {"multi_reward": MultiReward.SUM_ADVANTAGES})]
    for bad, msg in (("g2rpo.granular_list", "METHOD.KNOB="), ("g2rpo.nope=1", "no knob 'nope'"),
                     ("ppo.eta=1", "unknown method"), ("dancegrpo.eta=x", "could not convert"),
                     ("dancegrpo.eta=0.3;", "empty value"), ("mixgrpo.window_size=2.5", "invalid literal"),
                     ("flowgrpo.ema=1", "cannot be set"), ("g2rpo-wo-mgai.granular_list=1,2", "fixes granular_list"),
                     ("g2rpo.granular_list=1,1", "duplicate")):
        with pytest.raises(PlanError, match=re.escape(msg)):
            parse_sweep(bad)


def test_one_step_list_parser_for_the_runner_and_train():
    """benchmarks.run's sweeps and benchmarks.train's --set take the same syntax (ranges included) and refuse the same
    junk: both type a knob with parse_knob, whose tuple-of-ints parser is int_list."""
    from g2rpo.config import int_list

    for text, want in (("0-3", (0, 1, 2, 3)), ("0-1, 3", (0, 1, 3)), ("2", (2,))):
        assert int_list(text) == parse_knob("g2rpo", "eta_step_list", text, "x") == \
               parse_sweep(f"g2rpo.eta_step_list={text}").values[0] == want
    for bad in ("1,x", "3-1", "1,1", "0-2,2", ""):
        with pytest.raises(ValueError):
            int_list(bad)
        with pytest.raises(PlanError):
            parse_knob("g2rpo", "eta_step_list", bad, "x")


def test_generic_sweeps_in_the_plan():
    """--sweep for any method's knob: one variant per value with the typed value, the preset's other knobs; the paper's
    --granular-sets is the same sweep; a value equal to a planned run is not run twice."""
    r = run("benchmarks.run", "--dry-run", "--json", "--methods", "g2rpo,dancegrpo,mixgrpo", "--sweep",
            "dancegrpo.eta=0.3;0.5", "--sweep", "mixgrpo.window_size=2;4", "--granular-sets", "1,2,3")
    assert r.returncode == 0, r.stderr
    rows = {(x["method"], x["variant"]): x for x in json.loads(r.stdout)}
    assert set(rows) == {("g2rpo", "default"), ("dancegrpo", "default"), ("mixgrpo", "default"),
                         ("dancegrpo", "eta=0.5"), ("mixgrpo", "window_size=2"), ("g2rpo", "granular_list=1,2,3")}
    assert rows[("dancegrpo", "eta=0.5")]["knobs"]["eta"] == 0.5
    assert rows[("mixgrpo", "window_size=2")]["knobs"]["window_size"] == 2
    assert rows[("g2rpo", "granular_list=1,2,3")]["knobs"]["granular_list"] == [1, 2, 3]
    assert rows[("dancegrpo", "eta=0.5")]["knobs"]["lr"] == rows[("dancegrpo", "default")]["knobs"]["lr"]
    bad = run("benchmarks.run", "--dry-run", "--sweep", "dancegrpo.eta=0.3;-1")
    assert bad.returncode == 2 and "eta must be in [0, 10)" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # the smoke benchmark run (module fixture)
def test_granularity_table_rows(smoke):
    out, _ = smoke
    assert list(pd.read_csv(out / "table2_granularity.csv")["Λ"]) == ["{1}", "{1,2}", "{1,3}"]


def test_nan_reward_fails_cleanly_and_keeps_finished_runs(tmp_path, monkeypatch, capsys):
    import mlflow

    from benchmarks import run as bench
    from g2rpo import tiers
    from g2rpo.rewards import ChannelContrast

    class NaNRedness(ChannelContrast):
        def score(self, images, prompts):
            return torch.full((images.shape[0],), float("nan"))

    def broken_tiny():
        t = tiers._tiny()
        t.rewards["redness"] = NaNRedness()
        return t

    monkeypatch.setitem(tiers.LOADERS, "tiny", broken_tiny)
    (tmp_path / "table1_main.md").write_text("earlier results")
    rc = bench.main(["--preset", "smoke", "--methods", "g2rpo", "--seeds", "1", "--out", str(tmp_path)])
    errors = [ln for ln in re.split(r"[\r\n]", capsys.readouterr().err) if ln.startswith("error:")]
    assert rc == 1 and len(errors) == 1 and "g2rpo:default seed 0 failed: reward 'redness'" in errors[0], errors
    assert (tmp_path / "table1_main.md").read_text() == "earlier results"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    status = {r.data.tags["method"]: r.info.status for r in client.search_runs([exp.experiment_id], "tags.kind = 'child'")}
    assert status == {"base": "FINISHED", "g2rpo": "FAILED"}


def test_corrupt_model_file_fails_before_training(tmp_path, monkeypatch, capsys):
    from benchmarks import run as bench
    from g2rpo import tiers
    from g2rpo.pocket.model import CheckpointError

    def broken():
        raise CheckpointError("pocket generator files x.safetensors are unreadable (SafetensorError: ...); reinstall")

    monkeypatch.setitem(tiers.LOADERS, "tiny", broken)
    assert bench.main(["--preset", "smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: pocket generator files") and err.count("\n") == 1, err


@pytest.mark.slow  # the smoke benchmark run (module fixture)
def test_table_refuses_a_missing_store_or_experiment_without_creating_one(smoke, tmp_path):
    out, _ = smoke
    r = run("benchmarks.table", "--tracking-uri", f"sqlite:///{tmp_path / 'typo.db'}", "--experiment", "g2rpo-bench/smoke")
    assert r.returncode == 2 and r.stderr.startswith("error: no MLflow store") and not (tmp_path / "typo.db").exists()
    r = run("benchmarks.table", "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--experiment", "g2rpo-bench/typo")
    assert r.returncode == 2 and "no experiment 'g2rpo-bench/typo'" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_train_sets_any_knob_typed_like_a_sweep():
    r = run("benchmarks.train", "--method", "dancegrpo", "--preset", "smoke", "--set", "eta=0.5", "--set",
            "init_same_noise=false", "--dry-run")
    assert r.returncode == 0, r.stderr
    knobs = json.loads(r.stdout)["knobs"]
    assert knobs["eta"] == 0.5 and knobs["init_same_noise"] is False
    r = run("benchmarks.train", "--method", "g2rpo", "--preset", "smoke", "--granular-list", "1-2", "--dry-run")
    assert r.returncode == 0 and json.loads(r.stdout)["knobs"]["granular_list"] == [1, 2]
    for bad, msg in ((["--set", "bogus=1"], "no knob 'bogus'"), (["--set", "eta"], "expected KNOB=VALUE"),
                     (["--set", "eta=-1"], "eta must be in [0, 10)")):
        r = run("benchmarks.train", "--method", "dancegrpo", "--preset", "smoke", *bad, "--dry-run")
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
