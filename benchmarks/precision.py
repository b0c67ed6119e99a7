"""How precise the comparison is: rliable-style summaries over seeds x prompts, the evaluation's noise floor, the
probability of improvement between methods and the smallest difference this budget resolves (``eval/stats.py``).

Inputs are the per-prompt score frames the runner logs (one per training seed, indexed by prompt_index); the base
model's second evaluation with other noise (``noise2_scores_*.csv``) gives the noise floor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eval.stats import (iqm, min_detectable_difference, noise_floor, paired_diff_ci, poi_ci,
                        stratified_bootstrap_ci)

from .plan import BASE
from .render import write_table

N_BOOT = 2000


def matrix(frames: list[pd.DataFrame], reward: str) -> np.ndarray:
    """(seeds, prompts) scores of one reward, prompts in prompt_index order."""
    return np.stack([f.sort_index()[reward].to_numpy(dtype=float) for f in frames])


def summary_table(scores: dict[str, list[pd.DataFrame]], ind: list[str], names: dict, out: Path) -> list[Path]:
    """Per method and in-domain reward: mean and IQM with stratified bootstrap intervals, and the paired difference
    with the base model bootstrapped the same way (seeds and prompts both resampled)."""
    if BASE not in scores:
        return []
    shown, raw = [], []
    for m, frames in scores.items():
        row = {"Method": names.get(m, m), "seeds": len(frames)}
        for rew in ind:
            x = matrix(frames, rew)
            mean, mlo, mhi = stratified_bootstrap_ci(x, np.mean, N_BOOT)
            q, qlo, qhi = stratified_bootstrap_ci(x, iqm, N_BOOT)
            row[f"{rew} mean"] = f"{mean:.4f} [{mlo:.4f}, {mhi:.4f}]"
            row[f"{rew} IQM"] = f"{q:.4f} [{qlo:.4f}, {qhi:.4f}]"
            rec = {"method": m, "reward": rew, "seeds": len(frames), "prompts": x.shape[1], "mean": mean,
                   "mean_low": mlo, "mean_high": mhi, "iqm": q, "iqm_low": qlo, "iqm_high": qhi}
            if m != BASE:
                d, dlo, dhi = paired_diff_ci(x, matrix(scores[BASE], rew), np.mean, N_BOOT)
                row[f"Δ {rew} vs base"] = f"{d:+.4f} [{dlo:+.4f}, {dhi:+.4f}]"
                rec |= {"diff_vs_base": d, "diff_low": dlo, "diff_high": dhi}
            else:
                row[f"Δ {rew} vs base"] = "–"
            raw.append(rec)
        shown.append(row)
    note = ("Held-out prompts; each prompt's score is the mean over its evaluation images. Intervals: 95% stratified "
            f"bootstrap ({N_BOOT} resamples) over training seeds and prompts together (another seed and another "
            "prompt sample would both move the number); the difference with the base resamples the same prompts for "
            "both. IQM: interquartile mean over all (seed, prompt) scores (Agarwal et al. 2021).")
    return write_table(pd.DataFrame(shown), pd.DataFrame(raw), out, "precision", "Precision: mean and IQM over seeds × prompts", note)


def improvement_table(scores: dict[str, list[pd.DataFrame]], reward: str, names: dict, out: Path) -> list[Path]:
    """P(row method > column method) on one reward with intervals, and the smallest difference of means each pair
    resolves at this budget."""
    methods = [m for m in scores if m != BASE]
    if len(methods) < 2:
        return []
    shown, raw = [], []
    for a in methods:
        row = {"P(row > column)": names.get(a, a)}
        for b in methods:
            if a == b:
                row[names.get(b, b)] = "–"
                continue
            x, y = matrix(scores[a], reward), matrix(scores[b], reward)
            p, lo, hi = poi_ci(x, y, N_BOOT)
            d, dlo, dhi = paired_diff_ci(x, y, np.mean, N_BOOT)
            mdd = min_detectable_difference(x, y)
            row[names.get(b, b)] = f"{p:.2f} [{lo:.2f}, {hi:.2f}]"
            raw.append({"method": a, "versus": b, "reward": reward, "poi": p, "poi_low": lo, "poi_high": hi,
                        "mean_diff": d, "diff_low": dlo, "diff_high": dhi, "min_detectable_diff": mdd})
        shown.append(row)
    mdds = [r["min_detectable_diff"] for r in raw]
    note = (f"{reward}, held-out prompts. Probability of improvement (Agarwal et al. 2021): per prompt, the share of "
            "(seed of row, seed of column) pairs in which the row method scores higher (ties count half), averaged over "
            f"prompts; 95% interval by the same stratified bootstrap. An interval that excludes 0.5 is a difference. "
            f"Smallest difference of means this budget resolves (80% power, two-sided 5%, normal approximation with "
            f"seed and prompt variance, eval/stats.py): {min(mdds):.4f} to {max(mdds):.4f} over pairs "
            f"(median {np.median(mdds):.4f}); per pair in the CSV with the mean difference and its interval.")
    return write_table(pd.DataFrame(shown), pd.DataFrame(raw), out, f"improvement_{reward}",
                       f"Probability of improvement between methods ({reward})", note)


def noise_floor_table(base: pd.DataFrame, base2: pd.DataFrame, rewards: list[str], out: Path) -> list[Path]:
    """The base model scored twice with different evaluation noise: how far a number moves with no training at all."""
    shown, raw = [], []
    for rew in rewards:
        f = noise_floor(base.sort_index()[rew].to_numpy(float), base2.sort_index()[rew].to_numpy(float), N_BOOT)
        shown.append({"reward": rew, "mean (noise 1)": f"{base[rew].mean():.4f}", "mean (noise 2)": f"{base2[rew].mean():.4f}",
                      "difference": f"{f['diff']:+.4f} [{f['ci_low']:+.4f}, {f['ci_high']:+.4f}]",
                      "sd per prompt": f"{f['sd_per_prompt']:.4f}"})
        raw.append({"reward": rew} | f)
    note = ("The untrained base model evaluated twice on the held-out prompts, with the benchmark's evaluation noise and "
            "with another seed's: the difference a change of evaluation noise alone makes (95% bootstrap over prompts). "
            "Every model in the tables is scored with the first noise (common random numbers), so paired differences "
            "cancel most of it; an unpaired difference smaller than this is not a result.")
    return write_table(pd.DataFrame(shown), pd.DataFrame(raw), out, "noise_floor", "Noise floor of the evaluation", note)


GUARD_LIMITS = {"stat/saturation": 0.20, "stat/brightness": 0.10, "stat/colour_entropy": 0.25}
"""How far the mean of each image statistic may move from the base model before a reward gain counts as hacking.
Set before the results, from the colour-fraction probe recorded in SIGNAL.md (painting the canvas moved saturation
+0.52 and colour entropy -0.23 bits): each limit is about half of what that hack did, or for brightness what
painting a fifth of a white canvas in a mid-tone does; the noise floor table shows the base model's own move."""


def guard_table(scores: dict[str, list[pd.DataFrame]], names: dict, out: Path) -> list[Path]:
    """Each method's move of the hacking guards from the base model, with intervals, against the stated limits."""
    if BASE not in scores:
        return []
    shown, raw = [], []
    for m, frames in scores.items():
        if m == BASE:
            continue
        row, ok = {"Method": names.get(m, m)}, True
        for g, limit in GUARD_LIMITS.items():
            if g not in frames[0]:
                continue
            d, lo, hi = paired_diff_ci(matrix(frames, g), matrix(scores[BASE], g), np.mean, N_BOOT)
            inside = abs(d) <= limit
            ok &= inside
            row[f"Δ {g[5:]} (limit ±{limit})"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" + ("" if inside else " ✗")
            raw.append({"method": m, "guard": g[5:], "diff": d, "ci_low": lo, "ci_high": hi, "limit": limit,
                        "within": inside})
        row["within limits"] = "yes" if ok else "NO"
        shown.append(row)
    note = ("Image statistics of the held-out samples (never trained on), method minus base, paired by prompt, 95% "
            "stratified bootstrap. A reward gain counts as bought by degenerate images when a mean moves past its limit "
            "(✗); the sample grid shows what the numbers mean.")
    return write_table(pd.DataFrame(shown), pd.DataFrame(raw), out, "guards", "Hacking guards", note)


def summary_lines(out: Path, ind: list[str], names: dict) -> list[str]:
    """The headline claims, read back from the tables just written (so a rebuild states what its numbers say)."""
    lines = []
    paired, prec = out / "paired_vs_base.csv", out / "precision.csv"
    if paired.exists():
        d = pd.read_csv(paired)
        d = d[d.reward.isin(ind)]
        up = d[d.ci_low > 0]
        lines.append(f"- Learns its reward (paired 95% interval vs the base entirely above 0): {len(up)} of {len(d)} "
                     "(method, in-domain reward) pairs" + (f"; not: {', '.join(names.get(m, m) + ' ' + r for m, r in zip(d[d.ci_low <= 0].method, d[d.ci_low <= 0].reward))}"
                                                          if len(up) < len(d) else "") + " (`paired_vs_base.csv`).")
    if prec.exists():
        p = pd.read_csv(prec)
        gaps = p[p.reward.str.startswith("gap/") & p.method.ne(BASE)]
        if not gaps.empty:
            base = p[p.reward.str.startswith("gap/") & p.method.eq(BASE)].set_index("reward")["mean"]
            grew = gaps[gaps.diff_low > 0]
            lines.append(f"- Alignment gap (score with the image's own prompt minus another prompt's; base "
                         f"{', '.join(f'{r[4:]} {v:.4f}' for r, v in base.items())}): grew with a 95% interval above 0 "
                         f"for {len(grew)} of {len(gaps)} (method, reward) pairs (`precision.csv`, rows gap/...).")
    for rew in ind:
        f = out / f"improvement_{rew}.csv"
        if f.exists():
            q = pd.read_csv(f)
            sep = q[(q.poi_low > 0.5)]
            lines.append(f"- {rew}: the smallest difference of means between two methods this budget resolves is "
                         f"{q.min_detectable_diff.min():.4f}–{q.min_detectable_diff.max():.4f} (median "
                         f"{q.min_detectable_diff.median():.4f}); pairs whose probability of improvement excludes 0.5: "
                         + (", ".join(f"{names.get(a, a)} > {names.get(b, b)}" for a, b in zip(sep.method, sep.versus)) or "none")
                         + f" (`{f.name}`).")
    nf = out / "noise_floor.csv"
    if nf.exists():
        n = pd.read_csv(nf)
        n = n[n.reward.isin(ind)]
        lines += [f"- Noise floor ({r.reward}): the base model under another evaluation noise moves by {r.diff:+.4f} "
                  f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] (`noise_floor.csv`)." for r in n.itertuples()]
    g = out / "guards.csv"
    if g.exists():
        bad = pd.read_csv(g)
        bad = bad[~bad.within.astype(bool)]
        lines.append("- Hacking guards: every method within the stated limits (`guards.md`)." if bad.empty else
                     "- Hacking guards past their limits: " + ", ".join(f"{names.get(r.method, r.method)} {r.guard} "
                                                                    f"{r.diff:+.3f}" for r in bad.itertuples()) + " (`guards.md`).")
    return (["## Summary", ""] + lines + [""]) if lines else []
