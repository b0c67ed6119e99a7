"""Time to signal from fixed-set curves: the first crossing of round 0 + the curve's noise floor, interpolated."""
import numpy as np
import pandas as pd
import pytest

from benchmarks.plan import BASE
from benchmarks.table import crossing, signal_frame


def curve(method, seed, ys, step=4, nfe=100.0, secs=2.0):
    return [{"method": method, "seed": seed, "round": r * step, "cum_nfe": r * step * nfe, "wall_s": r * step * secs,
             "heldout/b": y} for r, y in enumerate(ys)]


def test_crossing_interpolates_between_the_points_around_it():
    g = pd.DataFrame(curve("m", 0, [0.30, 0.31, 0.35, 0.50]))
    hit = crossing(g, "heldout/b", 0.33)  # between round 4 (0.31) and round 8 (0.35): halfway
    assert hit == pytest.approx({"round": 6.0, "cum_nfe": 600.0, "wall_s": 12.0})
    assert crossing(g, "heldout/b", 0.6) is None
    assert crossing(g, "heldout/b", 0.2)["round"] == 0  # already above at the first point


def test_signal_frame_uses_the_base_runs_floor_and_each_seeds_round_zero():
    cf = pd.DataFrame(curve("a", 0, [0.30, 0.31, 0.35]) + curve("a", 1, [0.32, 0.33, 0.33]) + curve("b", 0, [0.30, 0.40, 0.41]))
    df = pd.DataFrame([{"method": BASE, "curve/noise_floor/b": 0.02}, {"method": "a"}, {"method": "b"}])
    sf = signal_frame(cf, df, "b").set_index(["method", "seed"])
    assert sf.loc[("a", 0), "signal_round"] == pytest.approx(4 + 4 * (0.32 - 0.31) / (0.35 - 0.31))
    assert np.isnan(sf.loc[("a", 1), "signal_round"])  # 0.33 never exceeds 0.32 + 0.02
    assert sf.loc[("b", 0), "signal_round"] == pytest.approx(4 * 0.02 / 0.10)
    assert signal_frame(cf, pd.DataFrame([{"method": BASE}]), "b").empty  # a store from before the floor was logged
