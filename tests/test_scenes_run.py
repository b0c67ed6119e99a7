"""The scenes preset end to end on the committed generator: one skill, one method, one round (subprocess)."""
import pandas as pd
import pytest

from tests.helpers import run_module


@pytest.mark.slow  # a real (tiny) benchmark run on the scenes generator, ~20 s
def test_scenes_run_writes_the_geneval_tables(tmp_path):
    out = tmp_path / "scenes"
    r = run_module("benchmarks.run", "--preset", "scenes", "--skills", "counting", "--methods", "flowgrpo",
                   "--seeds", "1", "--rounds", "1", "--no-compile", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    t = pd.read_csv(out / "table1_skills.csv")
    assert list(t.method) == ["base", "flowgrpo"]
    assert t[["heldout_overall", "indist_overall", "heldout/counting", "indist/counting"]].notna().all().all()
    assert t[["heldout_overall", "indist_overall"]].stack().between(0, 1).all()
    assert pd.isna(t.delta_heldout[0]) and t.delta_lo[1] <= t.delta_heldout[1] <= t.delta_hi[1]
    assert 0 <= t.flat_groups[1] <= 1 and t.nfe_per_round[1] > 0
    assert (out / "time_to_accuracy.csv").exists() and (out / "curves.png").exists()
    main = pd.read_csv(out / "table1_main.csv")
    assert {"eval/scenes|mean", "eval/scenes_strict|mean", "eval/scenes_align|mean"} <= set(main.columns)
    readme = (out / "README.md").read_text()
    assert "--skills counting" in readme and "Table 1 (skills)" in readme
