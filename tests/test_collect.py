"""python -m benchmarks.collect: tables from models trained by benchmarks.train and scored by eval.evaluate apart."""
import shutil

import pandas as pd
import pytest

from benchmarks.collect import main as collect
from eval.evaluate import main as evaluate
from benchmarks.train import main as train


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    """Base, G2RPO (2 seeds) and DanceGRPO (1 seed), one smoke round each, evaluated alike on the tiny tier."""
    root = tmp_path_factory.mktemp("collect")
    folders = {}
    for method, seed in (("g2rpo", 0), ("g2rpo", 1), ("dancegrpo", 0), (None, 0)):
        name = f"{method}-seed{seed}" if method else "base"
        ck = "base"
        if method:
            ck = str(root / "models" / f"{name}.safetensors")
            assert train(["--method", method, "--preset", "smoke", "--rounds", "1", "--seed", str(seed),
                          "--threads", "1", "--save", ck]) == 0
        folders[name] = root / "eval" / name
        assert evaluate(["--checkpoint", ck, "--tier", "tiny", "--steps", "3", "--threads", "1",
                         "--out", str(folders[name])]) == 0
    return root, folders


def test_tables_are_the_evaluations_means_over_seeds(evaluations, tmp_path):
    root, f = evaluations
    assert collect([str(p) for p in f.values()] + ["--out", str(tmp_path)]) == 0
    t = pd.read_csv(tmp_path / "table1_main.csv").set_index("Method")
    assert list(t.index) == ["Base model", "DanceGRPO", "G²RPO"]
    seeds = [pd.read_csv(f[f"g2rpo-seed{s}"] / "scores.csv").brightness.mean() for s in (0, 1)]
    assert t.loc["G²RPO", "eval/brightness|count"] == 2
    assert t.loc["G²RPO", "eval/brightness|mean"] == pytest.approx(sum(seeds) / 2, abs=1e-6)
    assert t.loc["G²RPO", "eval/brightness|std"] == pytest.approx(pd.Series(seeds).std(), abs=1e-6)
    assert t.loc["G²RPO", "cost/total_nfe|mean"] == t.loc["G²RPO", "nfe_per_round|mean"] > 0  # one round
    md = (tmp_path / "table1_main.md").read_text()
    assert "brightness (in)" in md and "contrast (out)" in md and "NFE/round" in md
    # G2RPO's batched rollout saves G x |M| evaluations per prompt; the official loop's count is shown beside ours
    assert t.loc["G²RPO", "nfe_per_round_official|mean"] > t.loc["G²RPO", "nfe_per_round|mean"]
    assert t.loc["DanceGRPO", "nfe_per_round_official|mean"] == t.loc["DanceGRPO", "nfe_per_round|mean"]
    assert "NFE/round (official)" in md
    paired = pd.read_csv(tmp_path / "paired_vs_base.csv")
    assert set(paired.method) == {"g2rpo", "dancegrpo"} and (paired.prompts == 4).all()
    assert "python -m benchmarks.collect" in (tmp_path / "README.md").read_text()


def test_evaluations_made_differently_are_refused(evaluations, tmp_path, capsys):
    root, f = evaluations
    other = tmp_path / "other"
    ck = str(root / "models" / "g2rpo-seed1.safetensors")
    assert evaluate(["--checkpoint", ck, "--tier", "tiny", "--steps", "4", "--threads", "1", "--out", str(other)]) == 0
    assert collect([str(f["base"]), str(f["g2rpo-seed0"]), str(other), "--out", str(tmp_path / "t")]) == 2
    assert "was not evaluated as" in capsys.readouterr().err
    assert collect([str(f["g2rpo-seed0"]), str(f["g2rpo-seed0"]), "--out", str(tmp_path / "t")]) == 2
    assert "both evaluate g2rpo default seed 0" in capsys.readouterr().err
    assert collect([str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")]) == 2
    assert "is not an evaluation written by" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(f["g2rpo-seed1"], broken)
    (broken / "scores.csv").write_text("prompt_index,image_index\n0,0\n")  # the reward columns are gone
    assert collect([str(f["base"]), str(broken), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "broken is not an evaluation written by" in err and "KeyError" in err and len(err.strip().splitlines()) == 1
