"""The scenes task's tables: GenEval-style strict pass per skill (Table 1 (skills)) and the time to a fixed accuracy.

Table 1 (skills) holds the strict pass held-out and in-distribution apart, the paired interval of the held-out
overall against the base model and the share of groups that gave no gradient; the time to accuracy is the NFE and
training seconds each method needs to reach a fixed held-out accuracy.

Built by ``benchmarks.table`` when the runs carry ``eval/geneval/overall`` (the scenes tier's summary).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from g2rpo.pocket import scenes

from .plan import BASE
from .render import write_table

STRICT = "scenes_strict"
N_BOOT = 4000


def skill_index(prompts: list[str]) -> dict[str, np.ndarray]:
    """Skill -> indices of its prompts, in GenEval's order, skills without prompts left out."""
    skills = np.array([scenes.skill_of(p) for p in prompts])
    return {k: np.nonzero(skills == k)[0] for k in scenes.SKILLS if (skills == k).any()}


def overall(x: np.ndarray, idx: dict[str, np.ndarray]) -> float:
    """GenEval's overall of per-prompt values: the mean over skills of the mean over each skill's prompts."""
    return float(np.mean([x[..., i].mean() for i in idx.values()]))


def paired_overall(method: np.ndarray, base: np.ndarray, idx: dict[str, np.ndarray], seed: int = 0,
                   n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """(Δ, lo, hi): the method's overall (seeds x prompts) minus the base's (prompts) on the same prompts and noise,
    with a 95% bootstrap interval resampling seeds and, within each skill, prompts (GenEval's overall weighs
    skills, so the resampling keeps each skill's prompt count)."""
    point = overall(method.mean(0), idx) - overall(base, idx)
    rng = np.random.default_rng(seed)
    s = method.shape[0]
    boots = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(0, s, s)
        parts = []
        for i in idx.values():
            cols = i[rng.integers(0, len(i), len(i))]
            parts.append(method[np.ix_(rows, cols)].mean() - base[cols].mean())
        boots[b] = np.mean(parts)
    return point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def _matrix(frames: list[pd.DataFrame]) -> np.ndarray:
    return np.stack([f[STRICT].to_numpy(float) for f in frames])


def cell(x: np.ndarray) -> str:
    """Mean ± std over seeds (rows); the mean alone for one seed."""
    return f"{x.mean():.3f}" + (f" ± {x.std(ddof=1):.3f}" if len(x) > 1 else "")


def skills_table(df: pd.DataFrame, held: dict[str, list[pd.DataFrame]], indist: dict[str, list[pd.DataFrame]],
                 flat: dict[str, float], titles: dict[str, str], out: Path) -> list[Path]:
    """Table 1 (skills): per method, the held-out and in-distribution overall strict pass (mean ± std over seeds), the
    paired Δ of the held-out overall against the base with its interval, the per-skill strict pass, flat groups, NFE."""
    if BASE not in held or STRICT not in held[BASE][0]:
        return []
    p_held = held[BASE][0].prompt.tolist()
    p_in = indist[BASE][0].prompt.tolist() if BASE in indist else []
    ih, ii = skill_index(p_held), skill_index(p_in)
    base = _matrix(held[BASE])[0]
    rows, raw = [], []
    for m, frames in held.items():
        x = _matrix(frames)
        xi = _matrix(indist[m]) if m in indist else None
        per_seed = np.array([overall(r, ih) for r in x])
        row = {"Method": titles.get(m, m), "seeds": len(frames), "held-out overall": cell(per_seed)}
        rec = {"method": m, "seeds": len(frames), "heldout_overall": per_seed.mean(),
               "heldout_overall_std": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan}
        if m != BASE:
            d, lo, hi = paired_overall(x, base, ih)
            row["Δ held-out vs base [95% CI]"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            rec |= {"delta_heldout": d, "delta_lo": lo, "delta_hi": hi}
        else:
            row["Δ held-out vs base [95% CI]"] = "–"
        if xi is not None:
            per_seed_in = np.array([overall(r, ii) for r in xi])
            row["in-dist overall"] = cell(per_seed_in)
            rec["indist_overall"] = per_seed_in.mean()
        for k, i in ih.items():
            row[f"{k} (held)"] = f"{x[:, i].mean():.2f}"
            rec[f"heldout/{k}"] = x[:, i].mean()
        for k, i in ii.items():
            row[f"{k} (in)"] = f"{xi[:, i].mean():.2f}"
            rec[f"indist/{k}"] = xi[:, i].mean()
        runs = df[(df.method == m) & (df.variant == "default")]
        if m in flat:
            row["flat groups"] = f"{flat[m]:.2f}"
            rec["flat_groups"] = flat[m]
        if m != BASE and "nfe_per_round" in runs:
            row["NFE/round"] = f"{runs.nfe_per_round.mean():.0f}"
            rec["nfe_per_round"] = runs.nfe_per_round.mean()
            rec["total_nfe"] = runs["cost/total_nfe"].mean() if "cost/total_nfe" in runs else np.nan
        rows.append(row)
        raw.append(rec)
    note = (f"GenEval-style strict pass of the rule verifier (every atom of the prompt holds; extra objects fail), "
            f"{len(p_held)} held-out prompts (compositions pretraining and RL never showed) and {len(p_in)} "
            f"in-distribution ones, each the mean of its images; overall = the mean of the skills' means, as GenEval. "
            f"Overall cells: mean ± std over training seeds. Δ: paired with the base model on the same prompts and "
            f"noise, 95% bootstrap interval over seeds and, within each skill, prompts ({N_BOOT} resamples). Skill "
            f"cells: mean over seeds. Flat groups: share of a round's prompts whose images all got the same in-domain "
            f"rewards (every advantage 0, no gradient), mean over rounds and seeds.")
    return write_table(pd.DataFrame(rows), pd.DataFrame(raw), out, "table1_skills",
                       "Table 1 (skills). GenEval-style strict pass, held-out and in-distribution", note)


def accuracy_table(cf: pd.DataFrame, threshold: float, crossing, titles: dict[str, str], out: Path) -> list[Path]:
    """NFE, training seconds and rounds until a method's held-out curve of the strict pass first reaches
    ``threshold`` (interpolated between curve points), mean over the seeds that got there."""
    col = f"heldout/{STRICT}"
    if cf.empty or col not in cf or not threshold:
        return []
    rows, raw = [], []
    for m, g in cf.groupby("method", sort=False):
        hits = []
        for seed, gs in g.groupby("seed"):
            h = crossing(gs.sort_values("round"), col, threshold - 1e-9)
            raw.append({"method": m, "seed": seed, "threshold": threshold} | (h or {}))
            hits += [h] if h else []
        n = g.seed.nunique()
        mean = lambda k: f"{np.mean([h[k] for h in hits]):.0f}" if hits else "not reached"  # noqa: E731
        rows.append({"Method": titles.get(m, m), "reached": f"{len(hits)}/{n}", "NFE": mean("cum_nfe"),
                     "train s": mean("wall_s"), "rounds": mean("round")})
    note = (f"When the fixed curve set's held-out strict pass first reaches {threshold:.2f} (same prompts and noise at "
            "every point, one image per prompt), linearly interpolated between curve points; the mean over the seeds "
            "that reached it, n of N. Training seconds exclude curve points and saves.")
    return write_table(pd.DataFrame(rows), pd.DataFrame(raw), out, "time_to_accuracy",
                       f"Time to accuracy (held-out strict pass ≥ {threshold:.2f})", note)
