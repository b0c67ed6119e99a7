"""benchmarks.verify: the cell comparison, the command it reads, and the smoke benchmark reproducing itself."""
import math
import shutil

import pandas as pd
import pytest

from benchmarks.verify import WALL_CLOCK, compare_csv, main, recorded, without
from tests.helpers import run_module as run


def frame(**cols):
    return pd.DataFrame({"method": ["base", "g2rpo"], **cols})


def test_equal_tables_compare_equal_and_one_changed_cell_is_named():
    a = frame(reward=[0.25, 0.5], n=[1, 3])
    assert compare_csv("t.csv", a, a.copy(), 0, 0, False).differences == []
    b = a.copy()
    b.loc[1, "reward"] = 0.5 + 1e-6
    (d,) = compare_csv("t.csv", a, b, 0, 0, False).differences
    assert d.startswith("g2rpo reward:")
    assert compare_csv("t.csv", a, b, 2e-6, 0, False).differences == []  # within the stated tolerance
    assert compare_csv("t.csv", a, b, 0, 1e-5, False).differences == []


def test_wall_clock_columns_are_not_compared_but_their_counts_are():
    assert WALL_CLOCK.search("time/train_s|mean") and WALL_CLOCK.search("wall_s_half_ci")
    assert not WALL_CLOCK.search("signal_wall_s|count") and not WALL_CLOCK.search("eval/scenes|mean")
    a = frame(**{"time/train_s|mean": [0.0, 30.0], "signal_wall_s|count": [0, 3]})
    b = frame(**{"time/train_s|mean": [0.0, 31.5], "signal_wall_s|count": [0, 2]})
    c = compare_csv("t.csv", a, b, 0, 0, False)
    assert len(c.differences) == 1 and "signal_wall_s|count" in c.differences[0]


def test_rows_are_matched_by_their_text_and_a_subset_expects_only_its_rows():
    a = pd.DataFrame({"method": ["base", "g2rpo", "flowgrpo"], "x": [1.0, 2.0, math.nan]})
    b = a.iloc[[2, 0]].reset_index(drop=True)  # another order, one row fewer; NaN equals NaN
    assert compare_csv("t.csv", a, b, 0, 0, subset=True).differences == []
    assert compare_csv("t.csv", a, b, 0, 0, subset=False).differences == ["row g2rpo: only in the committed table"]


def test_rows_of_one_method_per_seed_are_matched_by_method_and_seed():
    a = pd.DataFrame({"method": ["g2rpo", "g2rpo", "mixgrpo"], "seed": [0, 1, 0], "nfe": [10.0, 12.0, 8.0]})
    b = a.iloc[[1, 2, 0]].reset_index(drop=True)
    assert compare_csv("t.csv", a, b, 0, 0, False).differences == []
    b.loc[b.seed.eq(1).idxmax(), "nfe"] = 13.0
    (d,) = compare_csv("t.csv", a, b, 0, 0, False).differences
    assert d.startswith("g2rpo/1 nfe:"), d


def test_the_command_is_read_from_the_readme_and_out_is_replaced(tmp_path):
    (tmp_path / "README.md").write_text("# x\n\nMade by:\n\n```bash\npython -m benchmarks.run --preset smoke --out "
                                        "results/x --seeds 2\n```\n\n- git commit `abc123+dirty`, 2 CPU threads\n")
    args, commit = recorded(tmp_path)
    assert args == ["--preset", "smoke", "--out", "results/x", "--seeds", "2"] and commit == "abc123+dirty"
    assert without(args, ("--out",)) == ["--preset", "smoke", "--seeds", "2"]
    assert without(["--out=a", "--seeds", "2"], ("--out",)) == ["--seeds", "2"]
    (tmp_path / "README.md").write_text("# Benchmark results: preset `pocket`\n\n```bash\npython -m benchmarks.run \n```\n")
    assert recorded(tmp_path) == (["--preset", "pocket"], "unknown")  # the default of its day, not today's


@pytest.mark.parametrize("args", [["{tmp}/none"], ["{tmp}", "--atol", "-1"], ["{tmp}/empty"],
                                  ["{tmp}/ok", "--against", "{tmp}/empty"], ["{tmp}/ok", "--against", "{tmp}/ok", "--out", "{tmp}/x"]])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args):
    (tmp_path / "empty").mkdir()
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "README.md").write_text("python -m benchmarks.run --preset smoke\n")
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_against_a_folder_of_some_methods_compares_only_their_rows(tmp_path, capsys):
    for name, methods in (("all", ["base", "g2rpo", "flowgrpo"]), ("some", ["base", "g2rpo"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text("```bash\npython -m benchmarks.run --preset smoke\n```\n")
        pd.DataFrame({"method": methods, "x": [0.5, 0.7, 0.6][:len(methods)]}).to_csv(tmp_path / name / "t.csv", index=False)
    assert main([str(tmp_path / "all"), "--against", str(tmp_path / "some")]) == 1  # flowgrpo's row is missing
    assert main([str(tmp_path / "all"), "--against", str(tmp_path / "some"), "--methods", "g2rpo"]) == 0
    assert "all equal" in capsys.readouterr().out


@pytest.mark.slow  # three smoke benchmarks (~25 s each)
def test_the_smoke_benchmark_twice_gives_byte_identical_csvs_and_verify_agrees(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        r = run("benchmarks.run", "--preset", "smoke", "--out", str(out), cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    csvs = sorted(p.name for p in outs[0].glob("*.csv"))
    assert csvs == sorted(p.name for p in outs[1].glob("*.csv")) and "table1_main.csv" in csvs
    for name in csvs:
        a, b = ((o / name).read_bytes() for o in outs)
        if a != b:  # only the seconds may differ: the same bytes in every other cell
            x, y = (pd.read_csv(o / name, dtype=str, keep_default_na=False) for o in outs)
            timing = [c for c in x.columns if WALL_CLOCK.search(c)]
            assert timing, name
            pd.testing.assert_frame_equal(x.drop(columns=timing), y.drop(columns=timing))
    assert main([str(outs[0]), "--against", str(outs[1])]) == 0
    # a rerun of two of the methods (each now after fewer runs in its process) gives their rows digit for digit
    assert main([str(outs[0]), "--methods", "mixgrpo,g2rpo"]) == 0
    tampered = tmp_path / "c"
    shutil.copytree(outs[1], tampered)
    t = pd.read_csv(tampered / "paired_vs_base.csv")
    t.loc[0, "mean_diff"] += 1e-4
    t.to_csv(tampered / "paired_vs_base.csv", index=False)
    assert main([str(outs[0]), "--against", str(tampered)]) == 1
