"""The leaderboard of every committed task x method: ``python -m benchmarks.leaderboard [--results results]``.

Reads each results folder's own tables (nothing is retyped): for the scenes task ``table1_skills.csv`` (the held-out
GenEval-style overall strict pass and its paired interval against the base model), for the other tasks
``table1_main.csv`` and ``paired_vs_base.csv`` (the in-domain reward its README names). Writes ``results/README.md``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from g2rpo.files import write_text
from g2rpo.registry import METHODS

from .render import to_markdown


def folder_rows(d: Path) -> list[dict]:
    """One row per method of one results folder (the base model first); [] for a folder without tables."""
    readme = (d / "README.md").read_text() if (d / "README.md").exists() else ""
    command = re.search(r"```bash\n(.*?)\n```", readme, re.S)
    preset = re.search(r"preset `([\w-]+)`", readme)
    where = {"folder": f"[`{d.name}`]({d.name}/README.md)", "command": f"`{command.group(1).strip()}`" if command else "?",
             "preset": preset.group(1) if preset else "?"}
    if (d / "table1_skills.csv").exists():
        t = pd.read_csv(d / "table1_skills.csv")
        return [where | {"method": "Base model" if r.method == "base" else METHODS[r.method].title, "metric": "held-out strict pass (GenEval overall)",
                         "score": f"{r.heldout_overall:.3f}",
                         "Δ vs base [95% CI]": "–" if pd.isna(r.get("delta_heldout")) else
                         f"{r.delta_heldout:+.3f} [{r.delta_lo:+.3f}, {r.delta_hi:+.3f}]",
                         "NFE/round": "–" if pd.isna(r.get("nfe_per_round")) else f"{r.nfe_per_round:.0f}"}
                for _, r in t.iterrows()]
    ind = re.search(r"in-domain rewards: ([\w,]+);", readme)
    if not ind or not (d / "table1_main.csv").exists() or not (d / "paired_vs_base.csv").exists():
        return []
    reward = ind.group(1).split(",")[0]
    main, paired = pd.read_csv(d / "table1_main.csv"), pd.read_csv(d / "paired_vs_base.csv")
    paired = paired[paired.reward == reward].set_index("method")
    key = {METHODS[k].title: k for k in METHODS}
    rows = []
    for _, m in main.iterrows():
        p = paired.loc[key[m.Method]] if key.get(m.Method) in paired.index else None
        rows.append(where | {"method": m.Method, "metric": f"held-out {reward}", "score": f"{m[f'eval/{reward}|mean']:.3f}",
                             "Δ vs base [95% CI]": "–" if p is None else
                             f"{p.mean_diff:+.3f} [{p.ci_low:+.3f}, {p.ci_high:+.3f}]",
                             "NFE/round": "–" if pd.isna(m.get("nfe_per_round|mean")) else f"{m['nfe_per_round|mean']:.0f}"})
    return rows


def build(results: Path) -> Path:
    return write_text(results / "README.md", render(results))


def render(results: Path) -> str:
    """The text of ``results/README.md``."""
    rows = []
    for d in sorted(p for p in results.iterdir() if p.is_dir()):
        rows += folder_rows(d)
    if not rows:
        raise FileNotFoundError(f"no results folder with tables under {results}")
    df = pd.DataFrame(rows)
    lines = ["# Results", "", "Every committed task x method, read from each folder's own tables by "
             "`python -m benchmarks.leaderboard` (rerun it after committing a results folder). Score: the folder's "
             "headline metric on held-out prompts, mean over training seeds; Δ: paired with the base model on the same "
             "prompts and noise, 95% bootstrap interval (the folder's README says over what); NFE/round: model "
             "evaluations per training round. Each folder's README names its command, commit, seeds and spread.", ""]
    for folder, g in df.groupby("folder", sort=False):
        made = g.command.iloc[0]
        today = "" if "--preset" in made else (f"; the same today: `python -m benchmarks.run --preset {g.preset.iloc[0]}` "
                                                "with that command's other flags")
        lines += [f"## {folder}: {g.metric.iloc[0]}", "", f"Made by {made} (preset `{g.preset.iloc[0]}`{today}).", "",
                  to_markdown(g[["method", "score", "Δ vs base [95% CI]", "NFE/round"]]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.leaderboard", description=__doc__.split("\n")[0],
                                 epilog="documentation: docs/running.md")
    ap.add_argument("--results", type=Path, default=Path("results"), help="folder of results folders")
    a = ap.parse_args(argv)
    if not a.results.is_dir():
        print(f"leaderboard: --results {str(a.results)!r} is not a folder", file=sys.stderr)
        return 2
    try:
        print(build(a.results))
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"leaderboard: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
