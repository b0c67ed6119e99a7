"""The performance benchmark runs end to end on the tiny tier and reports what it promises."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from g2rpo.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a benchmark run; the JSON shape on the smallest grid
def test_perf_quick_json(tmp_path):
    out = tmp_path / "perf.md"
    signal = tmp_path / "time_to_signal.csv"  # as benchmarks.table writes it
    signal.write_text("method,reward,floor,seeds,seeds_reached,wall_s,wall_s_half_ci,cum_nfe,cum_nfe_half_ci,round,"
                      "round_half_ci\ng2rpo,brightness,0.01,2,2,3.5,1.0,100.0,20.0,1.5,0.5\n"
                      "dancegrpo,brightness,0.01,2,0,,,,,,\n")
    r = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--preset", "smoke", "--quick", "--skip-rss", "--reps", "1",
                        "--json", "--out", str(out), "--signal", str(signal)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    for k in ["speedup_optimized_vs_eager", "speedup_optimized_bf16_vs_eager", "speedup_batched_vs_loop", "mfu",
              "mfu_eager", "r2_cost_model", "peak_rss_gb", "peak_gflops", "peak_gflops_bf16", "time_to_signal",
              "paper_round_s_h200"]:
        assert k in res, k
    assert res["max_abs_diff"] < 1e-5 and res["speedup_batched_vs_loop"] > 0 and 0 < res["mfu"] < 1
    assert res["image_max_abs_diff"]["optimized"] < 1e-4 and res["first_ratio_max_dev"]["optimized"] < 1e-6
    # bf16 completions never touch the log-probs: only the compiled fp32 anchor's rounding shows (exact: test_compile)
    assert res["first_ratio_max_dev"]["optimized_bf16"] < 1e-6
    assert res["rollout_rows"]["optimized"] < res["rollout_rows"]["eager"]  # shared completion prefixes
    assert res["rollout_rows_loop"] > res["rollout_rows_batched"]  # the loop recomputes the anchor velocity per member
    # around smoke's G 3, N 6, |M| 3, |Lambda| 2: G 2, 3 (the base); N 4; |M| 1, 2; |Lambda| 1, 2 (the base again)
    assert len(res["cost_model_points"]) == 6 and res["r2_cost_model"] <= 1
    assert {q["G"] for q in res["cost_model_points"]} == {2, 3} | {res["cost_model_base"]["G"]}
    assert set(res["methods"]) == set(METHODS)
    assert all(t["round_s"] > 0 for t in res["methods"].values())
    assert res["time_to_signal"]["g2rpo"]["wall_s"] == 3.5 and res["time_to_signal"]["dancegrpo"]["wall_s"] is None
    assert "| g2rpo | 3.5 ± 1.0 | 100 ± 20 | 1.5 ± 0.5 | 2 of 2 |" in out.read_text()
    assert "| dancegrpo | – | – | – | 0 of 2 |" in out.read_text()
    assert (tmp_path / "perf.png").stat().st_size > 0
    assert "python -m benchmarks.perf --preset smoke" in out.read_text()


def test_perf_broken_signal_file_fails_fast(tmp_path):
    bad = tmp_path / "time_to_signal.csv"
    bad.write_text("not,the,columns\n1,2,3\n")
    r = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--preset", "smoke", "--signal", str(bad)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "time_to_signal.csv" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_perf_bad_preset_fails_fast():
    r = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--preset", "huge"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown preset") and "Traceback" not in r.stderr
