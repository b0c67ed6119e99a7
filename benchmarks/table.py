"""Rebuild every table and figure of a benchmark from MLflow alone.

``python -m benchmarks.table --tracking-uri URI --experiment NAME [--parent-run-id ID] [--out DIR]``
reads the runs of one benchmark invocation (the latest by default) and writes the tables
(.md/.csv/.tex), curves and the sample grid, plus a README.md that states the command that made them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from g2rpo.config import ADDED_LATER, PER_RUN, SharedConfig, comparable_differences
from g2rpo.files import atomic, write_text
from g2rpo.flags import FlagError, check_writable
from g2rpo.registry import METHODS, table_order
from g2rpo.tracking import flatten, open_store, shown_uri

from . import precision, skills
from .plan import BASE
from .precision import summary_lines
from .publish import fetch_published, publish
from .render import bootstrap_ci, formatted, summarise, write_all, write_table


def names() -> dict[str, str]:
    """Method -> its name in tables, in table order: the base model, then every registered method
    (``g2rpo.registry.table_order``)."""
    return {BASE: "Base model"} | {n: METHODS[n].title for n in table_order()}


def title(method: str) -> str:
    return names().get(method, method)


def rank(method: str) -> int:
    """Row position of a method in tables; a method no longer registered goes last."""
    order = list(names())
    return order.index(method) if method in order else len(order)

STD_NOTE = ("Cells: mean ± sample std (ddof 1) over training seeds (n). The base model is deterministic: one "
            "evaluation. NFE: model evaluations, a training forward+backward counted as one; per round = all "
            "prompts of a round.")


class NotComparable(RuntimeError):
    """Child runs whose comparable shared settings differ: no table may hold them together (one line, exit 2)."""


def comparable_params(params: dict) -> dict[str, str]:
    """A run's shared settings that every run of a table must share, as its ``shared.*`` params record them (all but
    ``g2rpo.config.PER_RUN``); a field of ``ADDED_LATER`` that the run predates counts as its default."""
    block = {k[len("shared."):]: v for k, v in params.items() if k.startswith("shared.")}
    block = {k: v for k, v in block.items() if k.split(".")[0] not in PER_RUN}
    if block:
        fields = SharedConfig.__dataclass_fields__
        block = flatten({f: fields[f].default for f in ADDED_LATER if f not in PER_RUN}) | block
    return block


def refuse_incomparable(blocks: dict[str, dict[str, str]]) -> None:
    """NotComparable naming a run (label -> comparable params) that differs from the most common block, and a run of
    that block; runs that record no shared settings are not checked (nothing to compare)."""
    blocks = {label: b for label, b in blocks.items() if b}
    key = {label: tuple(sorted(b.items())) for label, b in blocks.items()}
    common = Counter(key.values()).most_common(1)
    ref = next((label for label in blocks if key[label] == common[0][0]), None)
    for label, b in blocks.items():
        diff = comparable_differences({ref: blocks[ref], label: b})
        if diff:
            raise NotComparable(f"runs {ref} and {label} do not share settings ({', '.join(diff)} differ); a table "
                                f"compares only runs whose shared blocks differ at most in {', '.join(PER_RUN)}")


def load_runs(client, exp_id: str, parent_run_id: str | None):
    if parent_run_id is None:
        parents = client.search_runs([exp_id], "tags.kind = 'parent'", order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise RuntimeError(f"no benchmark runs in experiment {exp_id}")
        parent = parents[0]
    else:
        try:
            parent = client.get_run(parent_run_id)
        except Exception:  # MLflow's "not found" differs by backend
            raise RuntimeError(f"--parent-run-id {parent_run_id}: no such run in the MLflow store") from None
        if parent.info.experiment_id != exp_id:
            raise RuntimeError(f"--parent-run-id {parent_run_id}: a run of another experiment "
                               f"({client.get_experiment(parent.info.experiment_id).name!r})")
        if parent.data.tags.get("kind") != "parent":
            raise RuntimeError(f"--parent-run-id {parent_run_id}: not a benchmark invocation (its kind is "
                               f"{parent.data.tags.get('kind', 'unset')!r}; python -m benchmarks.run makes them)")
    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=50000)
    rows = []
    for r in children:
        row = {"run_id": r.info.run_id, "method": r.data.tags["method"], "variant": r.data.tags["variant"],
               "seed": int(r.data.tags["seed"]),
               "nfe_per_round": float(r.data.params.get("cost.nfe_per_round", "nan")),
               # the official loop's count (recorded since it differs for G2RPO); earlier runs: ours
               "nfe_per_round_official": float(r.data.params.get("cost.nfe_per_round_official",
                                                                 r.data.params.get("cost.nfe_per_round", "nan"))),
               "rounds": int(r.data.params.get("rounds", 0)),
               "weights": "ema" if "knobs.ema.decay" in r.data.params else "live"}
        rows.append(row | {k: v for k, v in r.data.params.items() if k.startswith("knobs.")} | dict(r.data.metrics))
    if not rows:
        return parent, pd.DataFrame()
    df = pd.DataFrame(rows)
    df["order"] = df["method"].map(rank)
    df = df.sort_values(["order", "variant", "seed"]).reset_index(drop=True)
    params = {r.info.run_id: r.data.params for r in children}
    refuse_incomparable({f"{r.method}:{r.variant}:seed{r.seed} ({r.run_id})": comparable_params(params[r.run_id])
                         for r in df.itertuples()})
    return parent, df


def reward_columns(parent, df) -> tuple[list[str], list[str], list[str]]:
    ind = [m for m in parent.data.tags.get("in_domain", "").split(",") if m]
    ood = [m for m in parent.data.tags.get("out_of_domain", "").split(",") if m]
    stats = sorted(c[len("eval/"):] for c in df.columns if c.startswith("eval/stat/"))
    return ind, ood, stats


def headers(ind, ood, stats, prefix="eval/") -> dict[str, str]:
    return ({f"{prefix}{m}": f"{m} (in)" for m in ind} | {f"{prefix}{m}": f"{m} (out)" for m in ood}
            | {f"{prefix}{s}": s.replace("stat/", "") + " (guard)" for s in stats})


def main_table(df, cols, out, signal: pd.DataFrame | None = None) -> list[Path]:
    d = df[df.variant == "default"].copy()
    if signal is not None and not signal.empty:
        d = d.merge(signal[["method", "seed", "signal_wall_s"]], on=["method", "seed"], how="left")
    d["Method"] = d.method.map(title)
    cost = {k: v for k, v in {"nfe_per_round": "NFE/round", "nfe_per_round_official": "NFE/round (official)",
                              "cost/total_nfe": "total NFE", "time/train_s": "train s",
                              "signal_wall_s": "s to signal"}.items() if k in d}
    if "nfe_per_round_official" in cost and d.nfe_per_round_official.equals(d.nfe_per_round):
        del cost["nfe_per_round_official"]
    s = summarise(d, ["Method"], list(cols) + list(cost))
    shown = formatted(s, ["Method"], cols | cost, {"nfe_per_round": 0, "nfe_per_round_official": 0,
                                                   "cost/total_nfe": 0, "time/train_s": 1, "signal_wall_s": 1})
    note = OFFICIAL_NFE_NOTE if "nfe_per_round_official" in cost else ""
    note += SIGNAL_NOTE if "signal_wall_s" in cost else ""
    return write_table(shown, s, out, "table1_main", "Table 1. Main comparison (held-out prompts)",
                       STD_NOTE + ema_note(d) + note)


OFFICIAL_NFE_NOTE = (" NFE/round (official): the same round as the official loop counts it; G2RPO's batched rollout "
                     "reuses the anchor's velocity for each SDE step (G x |M| fewer evaluations per prompt) and evaluates the "
                     "two points a member's completions share once (G x |M| x 2 x (|Lambda| - 1) fewer); NFE/round and "
                     "total NFE count the work done.")


SIGNAL_NOTE = (" s to signal: training seconds until the fixed-set held-out reward first exceeds the base model's by more "
               "than the curve's noise floor, over the seeds that got there (n; see time_to_signal.md).")


def ema_note(df) -> str:
    """Which rows score an EMA of the weights (as Flow-GRPO's official evaluation) rather than the live weights."""
    if "weights" not in df:
        return ""
    ema = sorted(set(df.loc[df.weights == "ema", "method"]), key=rank)
    return f" {', '.join(title(m) for m in ema)}: scores of the EMA of the weights (g2rpo.ema), as its official " \
           "evaluation; the other rows: the weights after the last round." if ema else ""


PAPER_SWEEPS = {("g2rpo", "granular_list"): ("table2_granularity", "Table 2. Granularity set Λ (G²RPO)", "Λ"),
                ("g2rpo", "eta_step_list"): ("table_eta_steps", "Noise-injection steps M (G²RPO; not in the paper)", "M")}
"""The paper's ablations keep their file names, titles and set notation; any other swept knob gets
``table_sweep_<method>_<knob>``."""


def family(method: str) -> str:
    return METHODS[method].family if method in METHODS else method


def sweep_tables(df, cols, out) -> list[Path]:
    """One table per knob in which runs of one family differ: for each method's default run, every run of its family
    that differs from it in that knob alone (its sweep's variants; a member that fixes the knob, as G²RPO w/o MGAI
    fixes Λ = {1}), one row per value; the same rows seen from another member's default make no second table. Knobs
    are compared as recorded (``knobs.*``)."""
    knobs = [c for c in df.columns if c.startswith("knobs.")]
    files, seen = [], set()
    for m in sorted(dict.fromkeys(df.method), key=lambda m: family(m) != m):  # a family's own method first
        default = df[(df.method == m) & (df.variant == "default")]
        if default.empty or m == BASE:
            continue
        fam = df[df.method.map(family) == family(m)][knobs].fillna("")
        ref = fam.loc[default.index[0]]
        for k in [k for k in knobs if fam[k].nunique() > 1]:
            rows = df.loc[fam.index[(fam.drop(columns=k) == ref.drop(k)).all(axis=1)]]
            if rows[k].nunique() < 2 or (k, frozenset(rows.index)) in seen:
                continue
            seen.add((k, frozenset(rows.index)))
            knob = k[len("knobs."):]
            stem, head, label = PAPER_SWEEPS.get((m, knob), (f"table_sweep_{m}_{knob.replace('.', '_')}",
                                                             f"Sweep of {knob} ({title(m)})", knob))
            sets = (m, knob) in PAPER_SWEEPS
            rows = rows.assign(**{label: rows[k].map(lambda v: "{" + v + "}" if sets else v)})
            rows = rows.assign(_n=rows[k].str.count(","), _v=pd.to_numeric(rows[k], errors="coerce"))
            rows = rows.sort_values(["_n", "_v", k])
            s = summarise(rows, [label], list(cols))
            others = [o for (fm, o) in PAPER_SWEEPS if fm == m and o != knob]
            note = (f"{title(m)} with {others[0]} = {{{ref['knobs.' + others[0]]}}}. " if sets and others else
                    f"{title(m)}, every other knob as its default run. ")
            files += write_table(formatted(s, [label], cols), s, out, stem, head, note + STD_NOTE)
    return files


def steps_table(df, ind, ood, stats, steps: list[int], main_steps: int, out) -> list[Path]:
    if len(steps) < 2:
        return []
    d = df[df.variant == "default"]
    frames = []
    for n in steps:
        prefix = "eval/" if n == main_steps else f"eval_{n}steps/"
        cols = headers(ind, ood, stats, prefix)
        part = d[["method"] + [c for c in cols if c in d]].rename(columns=cols)
        frames.append(part.assign(Steps=n, Method=part.method.map(title)))
    allsteps = pd.concat(frames)
    names = list(headers(ind, ood, stats, "").values())
    s = summarise(allsteps, ["Steps", "Method"], names)
    shown = formatted(s, ["Steps", "Method"], {n: n for n in names})
    return write_table(shown, s, out, "table3_steps", "Table 3. Evaluation at several ODE step counts", STD_NOTE)


def load_scores(client, df, main_steps: int, tag: str = "") -> dict[str, list[pd.DataFrame]]:
    """Per-prompt score frames (indexed by prompt_index) of every seed of every default-variant method."""
    tmp = Path(tempfile.mkdtemp())
    scores = {}
    for r in df[df.variant == "default"].itertuples():
        path = client.download_artifacts(r.run_id, f"eval/{tag}scores_{main_steps}steps.csv", str(tmp / r.run_id))
        scores.setdefault(r.method, []).append(pd.read_csv(path).set_index("prompt_index"))
    return scores


def precision_tables(client, df, scores, ind, ood, main_steps, out) -> list[Path]:
    """The precision summaries, the probability of improvement per in-domain reward and the noise floor."""
    gaps = [f"gap/{m}" for m in ind if f"gap/{m}" in scores[BASE][0]] if BASE in scores else []
    files = precision.summary_table(scores, ind + gaps, names(), out)
    for rew in ind:
        files += precision.improvement_table(scores, rew, names(), out)
    files += precision.guard_table(scores, names(), out)
    base = df[(df.method == BASE)]
    if not base.empty and "eval_noise2/" + ind[0] in df:
        base2 = load_scores(client, base, main_steps, "noise2_")[BASE][0]
        stats = [c for c in scores[BASE][0].columns if c.startswith("stat/")]
        files += precision.noise_floor_table(scores[BASE][0], base2, ind + ood + stats, out)
    return files


def paired_from_scores(scores: dict[str, list[pd.DataFrame]], ind, ood, out) -> list[Path]:
    """The paired table from per-prompt score frames (indexed by prompt_index) of every seed of every method."""
    if BASE not in scores:
        return []
    base = scores[BASE][0]
    rows, raw = [], []
    for m, frames in scores.items():
        if m == BASE:
            continue
        mean = pd.concat(frames).groupby(level=0).mean(numeric_only=True)
        row = {"Method": title(m), "seeds": len(frames), "prompts": len(base)}
        for rew in ind + ood:
            diff = (mean[rew] - base[rew]).to_numpy()
            lo, hi = bootstrap_ci(diff)
            row[f"Δ {rew}"] = f"{diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"
            raw.append({"method": m, "reward": rew, "mean_diff": diff.mean(), "ci_low": lo, "ci_high": hi,
                        "win_rate": float((diff > 0).mean()), "prompts": len(diff), "seeds": len(frames)})
        rows.append(row)
    note = ("Per held-out prompt, the method's score (mean over its seeds) minus the base model's, on the same "
            "initial noise; mean over prompts with a 95% percentile-bootstrap interval (4000 resamples). An interval "
            "that excludes 0 is a difference the prompt sample supports.")
    return write_table(pd.DataFrame(rows), pd.DataFrame(raw), out, "paired_vs_base", "Paired comparison with the base model", note)


def history(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value of one metric; a step re-logged after a resume counts once (the last value)."""
    return {x.step: x.value for x in sorted(client.get_metric_history(run_id, key), key=lambda x: x.timestamp)}


def curve_frame(client, df, ind) -> pd.DataFrame:
    """One row per (method, seed, curve point): round, cumulative NFE, training seconds, fixed-set rewards."""
    rows = []
    for r in df[(df.variant == "default") & (df.method != BASE)].itertuples():
        keys = {"cum_nfe": "curve/cum_nfe", "wall_s": "curve/wall_s"} | {
            f"{split}/{rew}": f"curve/{split}/{rew}" for split in ("heldout", "train") for rew in ind}
        h = {k: history(client, r.run_id, v) for k, v in keys.items()}
        for step in sorted(h["cum_nfe"]):
            rows.append({"method": r.method, "seed": r.seed, "round": step} | {k: v.get(step) for k, v in h.items()})
    return pd.DataFrame(rows)


def band(vals: pd.DataFrame) -> tuple:
    """Mean over seeds (rows) and its 95% t-interval half-width per column (0 with one seed)."""
    from scipy import stats

    n = vals.notna().sum().to_numpy()
    half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * vals.std().fillna(0).to_numpy() / np.sqrt(n), 0.0)
    return vals.mean().to_numpy(), half


def curves(client, df, ind, out, cf: pd.DataFrame) -> list[Path]:
    """Fixed-set learning curves (held-out and train prompts, fixed noise, ODE) against rounds, cumulative model
    evaluations and training seconds, with 95% bands over seeds; presets without a curve set fall back to the
    mean reward of the training rollouts, and say so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df[(df.variant == "default") & (df.method != BASE)]
    if d.empty or not ind:
        return []
    if cf.empty:
        return rollout_curves(client, d, ind, out)
    panels = [(split, rew) for rew in ind for split in ("heldout", "train")]
    xs = (("round", "round"), ("cum_nfe", "cumulative model evaluations (NFE)"), ("wall_s", "training seconds"))
    fig, axes = plt.subplots(len(panels), 3, figsize=(15, 3.4 * len(panels)), squeeze=False)
    for m, runs in cf.groupby("method", sort=False):
        for i, (split, rew) in enumerate(panels):
            wide = runs.pivot(index="seed", columns="round", values=f"{split}/{rew}")
            mu, half = band(wide)
            for ax, (x, label) in zip(axes[i], xs):
                xv = runs.pivot(index="seed", columns="round", values=x).mean().to_numpy()
                ax.plot(xv, mu, marker=".", label=f"{title(m)} ({len(wide)} seeds)")
                ax.fill_between(xv, mu - half, mu + half, alpha=0.2)
                ax.set(xlabel=label, ylabel=f"{rew}, {split} prompts")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Fixed-set learning curves (same prompts and noise at every point; mean and 95% t-interval over seeds)")
    return [save_figure(fig, out / "curves.png")] + equal_nfe_table(cf, ind, out)


def crossing(g: pd.DataFrame, col: str, threshold: float) -> dict | None:
    """Round, cumulative NFE and training seconds where one seed's curve (rows in round order) first rises above
    ``threshold``, interpolated linearly between the two curve points around it; None if it never does."""
    y = g[col].to_numpy(float)
    above = np.nonzero(y > threshold)[0]
    if not len(above):
        return None
    i = int(above[0])
    if i == 0:
        return {k: float(g[k].iloc[0]) for k in ("round", "cum_nfe", "wall_s")}
    f = (threshold - y[i - 1]) / (y[i] - y[i - 1])
    return {k: float(g[k].iloc[i - 1] + f * (g[k].iloc[i] - g[k].iloc[i - 1])) for k in ("round", "cum_nfe", "wall_s")}


def signal_frame(cf: pd.DataFrame, df: pd.DataFrame, reward: str) -> pd.DataFrame:
    """Per (method, seed): when its held-out curve of ``reward`` first exceeds its round-0 point (the base model) by
    more than the curve's noise floor (logged by the base run, ``benchmarks.execute.curve_noise_floor``); NaN where
    it never does. Empty when the store has no floor (runs from before it was logged)."""
    key = f"curve/noise_floor/{reward}"
    base = df[df.method == BASE]
    if cf.empty or key not in base or base[key].isna().all():
        return pd.DataFrame()
    floor = float(base[key].iloc[0])
    rows = []
    for (m, seed), g in cf.groupby(["method", "seed"], sort=False):
        g = g.sort_values("round")
        start = float(g[f"heldout/{reward}"].iloc[0])
        hit = crossing(g, f"heldout/{reward}", start + floor) or dict.fromkeys(("round", "cum_nfe", "wall_s"), np.nan)
        rows.append({"method": m, "seed": seed, "floor": floor, "round0": start, "last_round": float(g["round"].iloc[-1])}
                    | {f"signal_{k}": v for k, v in hit.items()})
    return pd.DataFrame(rows)


def time_to_signal_table(sf: pd.DataFrame, reward: str, out: Path) -> list[Path]:
    """Training seconds, model evaluations and rounds to signal per method: mean ± 95% t-interval over the seeds that
    got there, and how many did."""
    if sf.empty:
        return []
    shown, raw = [], []
    for m, g in sf.groupby("method", sort=False):
        reached = g.dropna(subset=["signal_wall_s"])
        row, rec = {"Method": title(m)}, {"method": m, "reward": reward, "floor": float(g.floor.iloc[0]),
                                                  "seeds": len(g), "seeds_reached": len(reached)}
        for k, header, digits in (("wall_s", "training s", 1), ("cum_nfe", "NFE", 0), ("round", "rounds", 1)):
            mu, half = band(reached[[f"signal_{k}"]]) if len(reached) else ([np.nan], [np.nan])
            row[f"{header} to signal"] = f"{mu[0]:.{digits}f} ± {half[0]:.{digits}f}" if len(reached) else "–"
            rec |= {k: float(mu[0]), f"{k}_half_ci": float(half[0])}
        row["seeds reaching it"] = f"{len(reached)} of {len(g)}"
        shown.append(row)
        raw.append(rec)
    note = (f"Time to signal: the training seconds (rollout, rewards, update; curve evaluations and compilation "
            f"excluded), model evaluations and rounds until a method's fixed-set {reward} on the held-out curve prompts "
            f"first exceeds its round-0 point (the base model) by more than the curve's noise floor "
            f"({float(sf.floor.iloc[0]):.4f}: the larger end of the 95% interval of the base model's curve value "
            "re-scored under another evaluation noise). Per seed, linear interpolation between the curve points around "
            "the crossing; mean ± 95% t-interval over the seeds that reached it. Seconds are of this machine.")
    return write_table(pd.DataFrame(shown), pd.DataFrame(raw), out, "time_to_signal", "Time to signal", note)


def equal_nfe_table(cf: pd.DataFrame, ind, out) -> list[Path]:
    """Every method at the same number of model evaluations: the fixed-set held-out reward at the smallest budget all
    methods reached, interpolated linearly between curve points of each seed."""
    last = cf.groupby(["method", "seed"]).cum_nfe.max()
    budget = float(last.min())
    shown, raw = [], []
    for m, runs in cf.groupby("method", sort=False):
        row = {"Method": title(m)}
        rec = {"method": m, "budget_nfe": budget}
        for rew in ind:
            per_seed = [float(np.interp(budget, g.cum_nfe, g[f"heldout/{rew}"])) for _, g in runs.sort_values("round").groupby("seed")]
            start = runs[runs["round"] == 0][f"heldout/{rew}"].mean()
            mu, half = band(pd.DataFrame([per_seed]).T)
            row[f"{rew} at {budget:.0f} NFE"] = f"{mu[0]:.4f} ± {half[0]:.4f} ({len(per_seed)})"
            row[f"Δ {rew} from round 0"] = f"{mu[0] - start:+.4f}"
            rec |= {f"{rew}": mu[0], f"{rew}_half_ci": half[0], f"{rew}_round0": start, "seeds": len(per_seed)}
        rounds = [float(np.interp(budget, g.cum_nfe, g["round"])) for _, g in runs.groupby("seed")]
        row["rounds at budget"] = f"{np.mean(rounds):.1f}"
        rec["rounds_at_budget"] = float(np.mean(rounds))
        shown.append(row)
        raw.append(rec)
    note = (f"Equal compute: each method's fixed-set reward on the held-out curve prompts (one image per prompt, fixed "
            f"noise) when it had spent {budget:.0f} model evaluations, the smallest total any method reached; linear "
            "interpolation between curve points; mean ± 95% t-interval over seeds (n). Round 0 is the base model.")
    return write_table(pd.DataFrame(shown), pd.DataFrame(raw), out, "equal_nfe", "Equal model evaluations (NFE)", note)


def rollout_curves(client, d, ind, out) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ind), 2, figsize=(11, 3.6 * len(ind)), squeeze=False)
    for m, runs in d.groupby("method", sort=False):
        hist = {k: [] for k in ind + ["cum_nfe"]}
        for rid in runs.run_id:
            for k in hist:
                h = history(client, rid, f"train/reward/{k}" if k != "cum_nfe" else "train/cum_nfe")
                hist[k].append([h[s] for s in sorted(h)])
        n = min(len(v) for v in hist["cum_nfe"])
        if n == 0:
            continue
        x_nfe = pd.DataFrame([v[:n] for v in hist["cum_nfe"]]).mean().to_numpy()
        for i, rew in enumerate(ind):
            vals = pd.DataFrame([v[:n] for v in hist[rew]])
            mu, sd = vals.mean().to_numpy(), vals.std().fillna(0).to_numpy()
            for ax, x in zip(axes[i], (range(n), x_nfe)):
                ax.plot(x, mu, label=f"{title(m)} ({len(vals)} seeds)")
                ax.fill_between(x, mu - sd, mu + sd, alpha=0.2)
    for i, rew in enumerate(ind):
        axes[i][0].set(xlabel="round", ylabel=f"train reward: {rew}")
        axes[i][1].set(xlabel="cumulative model evaluations (NFE)", ylabel=f"train reward: {rew}")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("In-domain reward of the training rollouts (mean ± std over seeds; no fixed curve set in this preset: "
                 "these move with the round's prompts and are not learning curves)")
    return [save_figure(fig, out / "curves.png")]


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def sample_grid(client, df, out, prompts: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df[(df.variant == "default") & (df.seed == df.groupby("method").seed.transform("min"))]
    if d.empty:
        return []
    tmp = Path(tempfile.mkdtemp())
    rows = [(title(r.method), Image.open(client.download_artifacts(r.run_id, "samples/row.png", str(tmp / r.run_id))))
            for r in d.itertuples()]
    k = rows[0][1].width // rows[0][1].height
    fig, axes = plt.subplots(len(rows), k, figsize=(1.6 * k + 1.2, 1.6 * len(rows) + 0.6), squeeze=False)
    for i, (name, img) in enumerate(rows):
        h = img.height
        for j in range(k):
            ax = axes[i][j]
            ax.imshow(img.crop((j * h, 0, (j + 1) * h, h)), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            if i == 0 and j < len(prompts):
                ax.set_title(prompts[j].replace(" emoji", ""), fontsize=7, wrap=True)
    fig.suptitle("Held-out prompts, same initial noise in every row (training seed 0 of each method)", fontsize=9)
    return [save_figure(fig, out / "samples.png")]


def build_tables(uri: str, exp_id: str, out: Path, parent_run_id: str | None = None) -> list[Path]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    parent, df = load_runs(client, exp_id, parent_run_id)
    out.mkdir(parents=True, exist_ok=True)
    pid = parent.info.run_id
    if df.empty:  # the per-run data is gone: what was published on the parent run is all there is
        files = fetch_published(client, pid, out)
        if not files:
            raise RuntimeError(f"parent run {pid} has no child runs and no tables logged on it")
        print(f"rebuilt from the tables logged on parent run {pid} (it has no child runs left)")
        return files
    ind, ood, stats = reward_columns(parent, df)
    cols = {c: h for c, h in headers(ind, ood, stats).items() if c in df}
    cols |= {f"eval/gap/{m}": f"{m} gap (own − other prompt)" for m in ind if f"eval/gap/{m}" in df}
    steps = [int(s) for s in parent.data.tags.get("eval_steps", "").split(",") if s]
    extra = [k for k in parent.data.tags.get("curve_rewards", "").split(",") if k]
    cf = curve_frame(client, df, ind + extra) if ind else pd.DataFrame()
    signal = signal_frame(cf, df, ind[0]) if ind else pd.DataFrame()
    files = main_table(df, cols, out, signal)
    files += time_to_signal_table(signal, ind[0], out) if ind else []
    scores = load_scores(client, df, steps[0])
    if "eval/geneval/overall" in df:  # the scenes task: GenEval-style tables
        flat = {m: float(np.nanmean([np.mean(list(history(client, r, "train/flat_groups").values()) or [np.nan])
                                     for r in g.run_id])) for m, g in df[df.variant == "default"].groupby("method")
                if m != BASE}
        files += skills.skills_table(df, scores, load_scores(client, df, steps[0], "indist_"), flat, names(), out)
        files += skills.accuracy_table(cf, float(parent.data.tags.get("accuracy_threshold", 0) or 0), crossing,
                                       names(), out)
    files += paired_from_scores(scores, ind, ood, out)
    files += precision_tables(client, df, scores, ind, ood, steps[0], out) if ind else []
    files += sweep_tables(df, cols, out)
    files += steps_table(df, ind, ood, stats, steps, steps[0], out)
    files += curves(client, df, ind + extra, out, cf)
    base_scores = df[df.method == BASE]
    prompts = []
    if not base_scores.empty:
        p = client.download_artifacts(base_scores.run_id.iloc[0], f"eval/scores_{steps[0]}steps.csv", tempfile.mkdtemp())
        prompts = pd.read_csv(p).prompt.tolist()
    files += sample_grid(client, df, out, prompts)
    files.append(write_readme(parent, df, files, out, uri, client.get_experiment(exp_id).name))
    publish(client, pid, files)
    print(f"built from the {len(df)} child runs of parent run {pid}; tables, figures and README logged on it")
    return files


def write_readme(parent, df, files, out: Path, uri: str, experiment: str) -> Path:
    t, m = parent.data.tags, parent.data.metrics
    seeds = df[df.method != BASE].groupby(["method", "variant"]).seed.nunique()
    lines = [f"# Benchmark results: preset `{t.get('preset')}`", "",
             "Made by:", "", "```bash", t.get("command", "?"), "```", "",
             f"- git commit `{t.get('git_commit')}`, {t.get('threads')} CPU threads, tier `{t.get('tier')}`; "
             f"wall-clock {m.get('wall_s', float('nan')) / 60:.1f} min, peak RSS {m.get('peak_rss_gb', float('nan')):.2f} GB",
             f"- training seeds per row: {', '.join(sorted(set(map(str, seeds.values))))}; "
             f"in-domain rewards: {t.get('in_domain')}; out-of-domain: {t.get('out_of_domain') or 'none'}",
             f"- MLflow parent run `{parent.info.run_id}`; rebuild these files from the store with "
             f"`python -m benchmarks.table --tracking-uri {shown_uri(uri)} --experiment {experiment}`",
             f"- rewards: {t.get('rewards')}"]
    sweeps = [p.relative_to(out).as_posix() for p in sweep_files(out, "sweep.md")]
    if sweeps:
        lines += ["- learning rates, selected per method family on the train prompts: "
                  + ", ".join(f"[`{name}`]({name})" for name in sweeps)]
    if (out / "SIGNAL.md").exists():
        lines += ["- what was tried to give this benchmark a signal, and what each gave: [`SIGNAL.md`](SIGNAL.md)"]
    lines += [""]

    lines += summary_lines(out, [m for m in t.get("in_domain", "").split(",") if m], names())
    for f in files:
        if f.suffix == ".md":
            lines += [f.read_text(), ""]
    lines += [f"![{f.stem}]({f.name})" for f in files if f.suffix == ".png"]
    return write_text(out / "README.md", "\n".join(lines) + "\n")


def sweep_files(out: Path, name: str) -> list[Path]:
    """``benchmarks.sweep``'s ``name`` files in ``out`` and its subfolders (a family registered later has its own
    sweep beside the first), not MLflow's artifact copies."""
    return sorted(p for p in out.rglob(name) if "mlartifacts" not in p.relative_to(out).parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.table", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/running.md")
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", required=True, help="e.g. g2rpo-bench/pocket")
    ap.add_argument("--parent-run-id", help="a benchmark invocation (default: the latest)")
    ap.add_argument("--out", type=Path, default=Path("results/rebuilt"))
    a = ap.parse_args(argv)

    def make():
        check_writable(a.out, "--out")
        _, exp_id = open_store(a.tracking_uri, a.experiment, None, create=False)
        return build_tables(a.tracking_uri, exp_id, a.out, a.parent_run_id)

    return write_all(make, a.out, (RuntimeError, FlagError))


if __name__ == "__main__":
    sys.exit(main())
