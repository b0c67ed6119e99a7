"""The learning-rate selection rule, its command, and the pocket preset taking what it selected."""
import json
from pathlib import Path

from benchmarks.sweep import main, select
from benchmarks.table import sweep_files
from g2rpo.presets import POCKET_LRS, SCENES_LRS, preset

ROOT = Path(__file__).resolve().parents[1]


def test_rule_takes_the_highest_mean_and_the_smaller_rate_on_a_tie():
    assert select({"g2rpo": {1e-5: 0.1, 1e-4: 0.3, 3e-4: 0.2}}) == {"g2rpo": 1e-4}
    assert select({"dancegrpo": {3e-5: 0.2, 1e-4: 0.2}}) == {"dancegrpo": 3e-5}


def test_pocket_preset_uses_the_committed_selection():
    """The benchmark's families were swept for results/pocket; those registered later, for results/pocket-all."""
    selected = {}
    for f in [ROOT / "results" / "pocket" / "sweep.json", *sweep_files(ROOT / "results" / "pocket-all", "sweep.json")]:
        sweep = json.loads(f.read_text())
        assert sweep["rounds"] == preset("pocket").shared.rounds and not set(selected) & set(sweep["selected"])
        selected |= sweep["selected"]
    assert POCKET_LRS == selected
    for family, lr in POCKET_LRS.items():
        assert preset("pocket").knobs[family]["optim"].lr == lr


def test_scenes_presets_use_the_scenes_selection():
    sweep = json.loads((ROOT / "results" / "scenes" / "sweep.json").read_text())
    assert sweep["rounds"] == preset("scenes").shared.rounds and SCENES_LRS == sweep["selected"]
    for name in ("scenes", "scenes-duo"):
        for family, lr in SCENES_LRS.items():
            assert preset(name).knobs[family]["optim"].lr == lr


def test_sweep_runs_and_writes_its_tables(tmp_path):
    assert main(["--preset", "smoke", "--families", "g2rpo,dancegrpo", "--lrs", "1e-4,1e-3", "--rounds", "1",
                 "--out", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "sweep.json").read_text())
    assert set(got["selected"]) == {"g2rpo", "dancegrpo"} and len(got["runs"]) == 4
    means = {(r["method"], r["lr"]): r["mean"] for r in got["runs"]}
    assert got["selected"]["g2rpo"] == max((1e-4, 1e-3), key=lambda lr: means[("g2rpo", lr)])
    assert "**" in (tmp_path / "sweep.md").read_text()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    run = client.search_runs([exp.experiment_id], "tags.kind = 'sweep'")[0]
    assert run.data.params["selected_lr.g2rpo"] == str(got["selected"]["g2rpo"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=exp.experiment_id)
    table = mlflow.load_table("tables/sweep.json", run_ids=[run.info.run_id])
    assert len(table) == 4 and set(table.method) == {"g2rpo", "dancegrpo"}


def test_bad_flags_are_one_line_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("G2RPO_TRAIN_PROMPTS", raising=False)
    assert main(["--families", "nope"]) == 2
    assert main(["--lrs", "2"]) == 2
    assert main(["--preset", "nope"]) == 2
    assert main(["--preset", "paper", "--out", str(tmp_path)]) == 2  # its model cannot load here: before any training
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
