"""The performance benchmark runs end to end on the tiny tier and reports what it promises."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a benchmark run; the JSON shape on the smallest grid
def test_perf_quick_json(tmp_path):
    out = tmp_path / "perf.md"
    r = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--preset", "smoke", "--quick", "--skip-rss", "--reps", "1",
                        "--json", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    for k in ["speedup_batched_vs_loop", "mfu", "r2_cost_model", "peak_rss_gb", "peak_gflops"]:
        assert k in res, k
    assert res["max_abs_diff"] < 1e-5 and res["speedup_batched_vs_loop"] > 0 and 0 < res["mfu"] < 1
    assert res["rollout_rows_loop"] > res["rollout_rows_batched"]  # the loop recomputes the anchor velocity per member
    assert len(res["cost_model_points"]) == 8 and res["r2_cost_model"] <= 1
    assert set(res["methods"]) == {"g2rpo", "g2rpo-wo-mgai", "flowgrpo", "dancegrpo", "mixgrpo"}
    assert all(t["round_s"] > 0 for t in res["methods"].values())
    assert "python -m benchmarks.perf --preset smoke" in out.read_text()


def test_perf_bad_preset_fails_fast():
    r = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--preset", "huge"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown preset") and "Traceback" not in r.stderr
