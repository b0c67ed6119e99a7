"""Known-answer tests for eval/stats.py (few-seed comparison statistics, rliable style)."""
import numpy as np
import pytest
from scipy import stats as sps

from eval.stats import (
    iqm,
    min_detectable_difference,
    noise_floor,
    paired_diff_ci,
    poi_ci,
    probability_of_improvement,
    stratified_bootstrap_ci,
)

Z975, Z80 = 1.959963984540054, 0.8416212335729143  # norm.ppf(0.975), norm.ppf(0.8)


# ---------------------------------------------------------------- iqm

def test_iqm_known_answer_and_robust():
    x = np.arange(8.0)
    assert iqm(x) == pytest.approx(3.5)  # mean of [2, 3, 4, 5]
    y = x.copy()
    y[-1] = 1e9
    assert iqm(y) == pytest.approx(3.5)
    assert iqm(x.reshape(2, 4)) == pytest.approx(3.5)  # flattened over seeds and prompts


def test_iqm_matches_scipy_trim_mean():
    x = np.random.default_rng(1).standard_normal((3, 37))
    assert iqm(x) == pytest.approx(sps.trim_mean(x.ravel(), 0.25), abs=1e-15)
    assert iqm(x) != pytest.approx(x.mean())


# ---------------------------------------------------------------- stratified_bootstrap_ci

def test_bootstrap_constant_matrix_zero_width():
    point, lo, hi = stratified_bootstrap_ci(np.full((3, 7), 2.5), np.mean, n_boot=200)
    assert point == lo == hi == 2.5
    assert stratified_bootstrap_ci(np.full((3, 7), 2.5), iqm, n_boot=200) == (2.5, 2.5, 2.5)


def test_bootstrap_deterministic_for_fixed_seed():
    x = np.random.default_rng(2).standard_normal((4, 30))
    a = stratified_bootstrap_ci(x, np.mean, n_boot=300, seed=7)
    assert a == stratified_bootstrap_ci(x, np.mean, n_boot=300, seed=7)
    assert a != stratified_bootstrap_ci(x, np.mean, n_boot=300, seed=8)


def _two_way_bootstrap_var(x):
    """Exact variance of the mean under the two-way bootstrap, conditional on the data.

    Decompose x_ij = m + r_i + c_j + e_ij (row/column effects, interaction with zero row and column means).
    The resampled mean is m + mean_a r[R_a] + mean_b c[C_b] + mean_ab e[R_a, C_b], with R (s draws) and
    C (P draws) independent uniform. All cross terms vanish because r, c have zero mean and e has zero row
    and column means; in the e term only a=a', b=b' pairs survive (sP of them). Hence
        Var* = mean(r^2)/s + mean(c^2)/P + mean(e^2)/(sP)      (plug-in, ddof=0 variances).
    For iid N(0, sd^2) data, E[mean(r^2)] = (s-1)/s * sd^2/P, E[mean(c^2)] = (P-1)/P * sd^2/s,
    E[mean(e^2)] = (s-1)(P-1)/(sP) * sd^2, so
        Var* ~= sd^2/(sP) * [(s-1)/s + (P-1)/P + (s-1)(P-1)/(sP)]  (-> 3 sd^2/N for large s, P).
    So the naive 2*1.96*sd/sqrt(N) is NOT the expected width: for s=5, P=400 the factor is 2.5955 and the
    expected width is sqrt(2.5955) ~= 1.61x the naive one.
    """
    s, p = x.shape
    m = x.mean()
    r = x.mean(1) - m
    c = x.mean(0) - m
    e = x - m - r[:, None] - c[None, :]
    return (r ** 2).mean() / s + (c ** 2).mean() / p + (e ** 2).mean() / (s * p)


def test_bootstrap_width_iid_normal():
    s, p = 5, 400
    x = np.random.default_rng(3).standard_normal((s, p))
    point, lo, hi = stratified_bootstrap_ci(x, np.mean, n_boot=2000, level=0.95, seed=0)
    assert point == pytest.approx(x.mean())
    assert lo < 0 < hi  # covers the true mean
    # Conditional on the data the bootstrap distribution of the mean is ~normal with the exact variance
    # above; Monte Carlo error of a 2000-replicate 95% percentile width is ~2%, so 10% is a safe bracket.
    expected = 2 * Z975 * np.sqrt(_two_way_bootstrap_var(x))
    assert (hi - lo) == pytest.approx(expected, rel=0.10)
    # Unconditional expectation (docstring above): ~1.61x naive. The row term rests on 5 seed means (chi2_4),
    # so allow a wide bracket, but it must be clearly wider than an iid/one-way bootstrap would give.
    naive = 2 * Z975 / np.sqrt(s * p)
    assert 1.2 < (hi - lo) / naive < 2.2


def test_bootstrap_resamples_both_axes():
    # rows differ only by a seed offset -> any width comes from seed resampling alone
    seeds_only = np.repeat(np.array([[0.0], [1.0], [2.0], [3.0]]), 10, axis=1)
    _, lo, hi = stratified_bootstrap_ci(seeds_only, np.mean, n_boot=500)
    assert hi - lo > 0.5
    # columns differ only -> any width comes from prompt resampling alone
    prompts_only = np.repeat(np.linspace(0, 3, 10)[None, :], 4, axis=0)
    _, lo, hi = stratified_bootstrap_ci(prompts_only, np.mean, n_boot=500)
    assert hi - lo > 0.5


def test_bootstrap_one_seed_resamples_prompts():
    x = np.random.default_rng(4).standard_normal((1, 200))
    point, lo, hi = stratified_bootstrap_ci(x, np.mean, n_boot=2000)
    assert lo < point < hi
    assert (hi - lo) == pytest.approx(2 * Z975 * x.std() / np.sqrt(200), rel=0.10)


# ---------------------------------------------------------------- paired_diff_ci

def test_paired_diff_exact_shift():
    v = np.random.default_rng(5).standard_normal(50)
    y = np.tile(v, (3, 1))  # identical rows: seed resampling cannot change anything
    x = np.tile(v + 0.5, (4, 1))
    point, lo, hi = paired_diff_ci(x, y, n_boot=500)
    assert point == pytest.approx(0.5, abs=1e-12)
    assert 0.5 - 1e-12 <= lo <= hi <= 0.5 + 1e-12
    # base model with a single row; prompt pairing must cancel the large per-prompt variation
    point, lo, hi = paired_diff_ci(x, v[None, :], n_boot=500)
    assert 0.5 - 1e-12 <= lo <= point <= hi <= 0.5 + 1e-12


def test_paired_diff_detects_shift_and_covers_zero():
    rng = np.random.default_rng(6)
    prompt_difficulty = 3 * rng.standard_normal(100)  # shared; pairing removes it
    y = prompt_difficulty + rng.standard_normal((3, 100))
    x_shift = prompt_difficulty + 1.0 + rng.standard_normal((3, 100))
    x_null = prompt_difficulty + rng.standard_normal((3, 100))
    _, lo, hi = paired_diff_ci(x_shift, y, n_boot=1000)
    assert lo > 0
    _, lo, hi = paired_diff_ci(x_null, y, n_boot=1000)
    assert lo < 0 < hi


# ---------------------------------------------------------------- probability_of_improvement

def test_poi_known_answers():
    assert probability_of_improvement(np.ones((3, 4)), np.zeros((2, 4))) == 1.0
    x = np.random.default_rng(7).standard_normal((3, 5))
    assert probability_of_improvement(x, x) == 0.5
    assert probability_of_improvement([[1.0], [3.0]], [[2.0], [2.0]]) == 0.5
    assert probability_of_improvement([[1.0], [3.0]], [[0.0], [2.0]]) == 0.75
    # two prompts: x=[1,2] vs y=[0,.5] -> 4/4 = 1; x=[0,1] vs y=[1,2] -> one tie of 4 pairs = 0.5/4 = 0.125
    # -> mean over prompts (1 + 0.125) / 2
    assert probability_of_improvement([[1.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [0.5, 2.0]]) == 0.5625


def test_poi_symmetric_and_matches_mann_whitney():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 4, (3, 20)).astype(float)  # integers -> many ties
    y = rng.integers(0, 4, (4, 20)).astype(float)
    pxy, pyx = probability_of_improvement(x, y), probability_of_improvement(y, x)
    assert pxy + pyx == pytest.approx(1.0)
    u = [sps.mannwhitneyu(x[:, p], y[:, p]).statistic / (3 * 4) for p in range(20)]
    assert pxy == pytest.approx(np.mean(u))


def test_poi_ci_brackets_point():
    rng = np.random.default_rng(9)
    x = 0.3 + rng.standard_normal((3, 60))
    y = rng.standard_normal((3, 60))
    point, lo, hi = poi_ci(x, y, n_boot=500)
    assert point == probability_of_improvement(x, y)
    assert 0 <= lo < point < hi <= 1
    assert poi_ci(x, y, n_boot=500) == (point, lo, hi)


# ---------------------------------------------------------------- noise_floor

def test_noise_floor_identical():
    a = np.random.default_rng(10).standard_normal(30)
    nf = noise_floor(a, a.copy(), n_boot=200)
    assert nf == {"mean_abs_diff_of_means": 0.0, "diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "sd_per_prompt": 0.0}


def test_noise_floor_known_answers():
    b = np.random.default_rng(11).standard_normal(30)
    nf = noise_floor(b + 0.1, b, n_boot=200)
    for k in ("mean_abs_diff_of_means", "diff", "ci_low", "ci_high"):
        assert nf[k] == pytest.approx(0.1, abs=1e-12)
    assert nf["sd_per_prompt"] == pytest.approx(0.0, abs=1e-12)
    # d = [1, 0, 1, -2]: mean 0, sd sqrt(6/3)
    nf = noise_floor([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 2.0, 6.0], n_boot=500)
    assert nf["diff"] == 0.0 and nf["mean_abs_diff_of_means"] == 0.0
    assert nf["sd_per_prompt"] == pytest.approx(np.sqrt(2.0))
    assert -2.0 <= nf["ci_low"] < 0.0 < nf["ci_high"] <= 1.0


# ---------------------------------------------------------------- min_detectable_difference

def test_mdd_known_answer():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])  # row means 2, 4 -> var 2, /s_x=2 -> 1
    y = np.ones((2, 3))  # row means 1, 1 -> 0
    # paired prompt diff = [2,3,4] - [1,1,1] = [1,2,3] -> var 1, /P=3 -> 1/3;  SE^2 = 4/3
    expected = (Z975 + Z80) * np.sqrt(4.0 / 3.0)  # ~= 3.2350
    assert min_detectable_difference(x, y) == pytest.approx(expected, rel=1e-12)
    # single-seed y: its seed term is 0 by definition -> same answer
    assert min_detectable_difference(x, np.ones((1, 3))) == pytest.approx(expected, rel=1e-12)
    # level/power enter through the z quantiles: level 0.9, power 0.5 -> z = 1.6449 + 0
    assert min_detectable_difference(x, y, level=0.9, power=0.5) == pytest.approx(
        1.6448536269514722 * np.sqrt(4.0 / 3.0), rel=1e-12)


def test_mdd_decreases_with_more_prompts():
    rng = np.random.default_rng(12)
    x = 0.2 + rng.standard_normal((3, 40))
    y = rng.standard_normal((3, 40))
    m = [min_detectable_difference(np.tile(x, k), np.tile(y, k)) for k in (1, 4, 16)]
    # tiling keeps the seed means and the per-prompt spread, so only the /P term shrinks
    assert m[0] > m[1] > m[2] > 0
