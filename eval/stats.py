"""Few-seed comparison statistics in the style of Agarwal et al. 2021 (rliable): IQM, bootstrap CIs, P(X > Y).

Data layout: one method's scores are a matrix x of shape (n_seeds, n_prompts), x[s, p] being the score of
training seed s on held-out prompt p. Every method is scored on the same prompts with the same evaluation
noise, so the prompt axis is paired across methods; seeds are independent runs and are NOT paired.

The bootstraps here resample both axes (seeds and prompts) because both are samples from a larger
population we want to generalise over: another training seed and another prompt set would both change the
number. This is more conservative than rliable's per-task run resampling (which treats tasks as fixed);
with iid noise the two-way bootstrap variance of the mean approaches 3x the naive sd^2 / (n_seeds * n_prompts)
because row, column and cell noise are each counted (derivation in tests/test_stats.py).

Pure numpy (+ scipy.stats for trim_mean and norm.ppf) so it runs anywhere the results files are.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats as _sps

Stat = Callable[[np.ndarray], float]


def _as_matrix(x, name: str = "x") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty (n_seeds, n_prompts) matrix, got shape {x.shape}")
    return x


def _check_paired(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must share the prompt axis, got {x.shape[1]} and {y.shape[1]} prompts")


def _percentile_ci(boots: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = np.percentile(boots, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def _seed_index(rng: np.random.Generator, n: int) -> np.ndarray:
    # A single seed cannot be resampled meaningfully (it would always be itself); skip the draw so the
    # prompt stream stays the same whether or not a side has one row.
    return np.zeros(1, dtype=np.intp) if n == 1 else rng.integers(0, n, n)


def iqm(x) -> float:
    """Interquartile mean of all entries (rliable's IQM = scipy.stats.trim_mean(x.ravel(), 0.25)).

    Why: robust to a few diverged seeds or degenerate prompts, yet less noisy than the median.
    """
    return float(_sps.trim_mean(np.asarray(x, dtype=np.float64).ravel(), 0.25))


def stratified_bootstrap_ci(x, stat: Stat = np.mean, n_boot: int = 2000, level: float = 0.95,
                            seed: int = 0) -> tuple[float, float, float]:
    """Percentile CI (point, lo, hi) of stat(x), resampling seeds and prompts independently with replacement.

    With one seed only prompts are resampled. Deterministic for a fixed `seed`.
    """
    x = _as_matrix(x)
    s, p = x.shape
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        rows, cols = _seed_index(rng, s), rng.integers(0, p, p)
        boots[b] = stat(x[np.ix_(rows, cols)])
    return (float(stat(x)), *_percentile_ci(boots, level))


def _paired_bootstrap(x: np.ndarray, y: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], float],
                      n_boot: int, level: float, seed: int) -> tuple[float, float, float]:
    # One prompt resample shared by both methods keeps the pairing (prompt difficulty cancels in the
    # contrast); seed resamples are independent because seeds are different runs per method.
    _check_paired(x, y)
    p = x.shape[1]
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        cols = rng.integers(0, p, p)
        rx, ry = _seed_index(rng, x.shape[0]), _seed_index(rng, y.shape[0])
        boots[b] = fn(x[np.ix_(rx, cols)], y[np.ix_(ry, cols)])
    return (float(fn(x, y)), *_percentile_ci(boots, level))


def paired_diff_ci(x, y, stat: Stat = np.mean, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """Percentile CI (point, lo, hi) of stat(x) - stat(y) with a shared prompt resample and independent seed resamples.

    x is (s1, P), y is (s2, P); y may be the base model with a single row.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    return _paired_bootstrap(x, y, lambda a, b: float(stat(a)) - float(stat(b)), n_boot, level, seed)


def probability_of_improvement(x, y) -> float:
    """rliable's P(X > Y): per prompt, the Mann-Whitney U / (s1 * s2) over all seed pairs (ties count 1/2); then mean over prompts.

    Why: a scale-free effect size that does not let one prompt with a huge score range dominate.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    _check_paired(x, y)
    xi, yj = x[:, None, :], y[None, :, :]  # (s1, s2, P)
    per_prompt = ((xi > yj) + 0.5 * (xi == yj)).mean(axis=(0, 1))
    return float(per_prompt.mean())


def poi_ci(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Percentile CI (point, lo, hi) of probability_of_improvement, bootstrapped like paired_diff_ci."""
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    return _paired_bootstrap(x, y, probability_of_improvement, n_boot, level, seed)


def noise_floor(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """How much one checkpoint's score moves when only the evaluation noise changes (a, b: per-prompt scores).

    Why: a method difference smaller than this floor is indistinguishable from re-running the evaluation.
    Returns mean_abs_diff_of_means, diff = mean(a - b), ci_low/ci_high of that mean (bootstrap over
    prompts) and sd_per_prompt = std(a - b, ddof=1).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"a and b must be 1-D with the same length >= 2, got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(axis=1)
    lo, hi = _percentile_ci(boots, level)
    return {
        "mean_abs_diff_of_means": float(abs(a.mean() - b.mean())),
        "diff": float(d.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "sd_per_prompt": float(d.std(ddof=1)),
    }


def min_detectable_difference(x, y, level: float = 0.95, power: float = 0.8) -> float:
    """Smallest true difference of means a two-sided test at `level` detects with probability `power`.

    Normal approximation: MDD = (z_{1 - alpha/2} + z_{power}) * SE, alpha = 1 - level, with the analytic
    standard error of mean(x) - mean(y) under the two-way (seeds x prompts) design:

        SE^2 = var(row means of x) / s_x + var(row means of y) / s_y + var_p(x.mean(0) - y.mean(0)) / P

    (all variances with ddof=1). The first two terms are training-seed noise of each method, the last the
    prompt noise of the paired per-prompt difference (prompts are shared, so prompt difficulty cancels).
    A side with a single seed has no estimable seed variance; its term is taken as 0, which makes the MDD
    optimistic (too small) if that side really is a random training run rather than a fixed base model.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    _check_paired(x, y)
    p = x.shape[1]
    if p < 2:
        raise ValueError("need at least 2 prompts to estimate the prompt variance")

    def seed_term(m: np.ndarray) -> float:
        return 0.0 if m.shape[0] == 1 else float(m.mean(axis=1).var(ddof=1)) / m.shape[0]

    prompt_term = float((x.mean(axis=0) - y.mean(axis=0)).var(ddof=1)) / p
    se = np.sqrt(seed_term(x) + seed_term(y) + prompt_term)
    alpha = 1.0 - level
    z = _sps.norm.ppf(1.0 - alpha / 2.0) + _sps.norm.ppf(power)
    return float(z * se)
