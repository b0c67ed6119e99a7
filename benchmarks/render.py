"""Tables as Markdown, CSV and LaTeX from one frame of mean / std / n cells."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from g2rpo.errors import os_error
from g2rpo.files import atomic, write_text


def cell(mean: float, std: float, n: int, digits: int = 4) -> str:
    """'mean ± std (n)'; the std is over seeds (ddof 1) and omitted for a single seed."""
    if n == 0 or mean != mean:
        return "–"
    if n == 1 or std != std:
        return f"{mean:.{digits}f} (1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def summarise(df: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    """Per group of ``by``: mean, std (ddof 1) and n of each column, as columns '<col>|mean' etc."""
    g = df.groupby(by, sort=False)
    parts = {f"{c}|{stat}": getattr(g[c], stat)() for c in cols for stat in ("mean", "std", "count")}
    return pd.DataFrame(parts).reset_index()


def formatted(summary: pd.DataFrame, by: list[str], cols: dict[str, str], digits: dict[str, int] | None = None) -> pd.DataFrame:
    """``cols`` maps metric -> shown header; returns string cells."""
    digits = digits or {}
    out = summary[by].copy()
    for c, header in cols.items():
        out[header] = [cell(m, s, int(n), digits.get(c, 4)) for m, s, n in
                       zip(summary[f"{c}|mean"], summary[f"{c}|std"], summary[f"{c}|count"])]
    return out


def to_markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def _tex_escape(s: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("{", r"\{"),
                 ("}", r"\}"), ("±", r"$\pm$"), ("Λ", r"$\Lambda$"), ("–", "--"), ("²", "$^2$")]:
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, caption: str) -> str:
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_tex_escape(caption)}}}",
             r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule",
             " & ".join(_tex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(str(v)) for v in r) + r" \\" for r in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(shown: pd.DataFrame, raw: pd.DataFrame, out: Path, stem: str, title: str, note: str) -> list[Path]:
    """``stem``.md (title, table, note), .csv (raw numbers) and .tex."""
    md = write_text(out / f"{stem}.md", f"## {title}\n\n{to_markdown(shown)}\n\n{note}\n")
    csv = out / f"{stem}.csv"
    with atomic(csv) as tmp:
        raw.to_csv(tmp, index=False, float_format="%.6g")
    tex = write_text(out / f"{stem}.tex", to_latex(shown, title))
    return [md, csv, tex]


def bootstrap_ci(x, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fixed seed, so tables are reproducible)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def write_all(make, out: Path, errors: tuple[type[BaseException], ...]) -> int:
    """A table command's ending: ``make()`` writes the files; one-line error and exit 2 on ``errors``."""
    try:
        files = make()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk mid-way: every file is whole, the old one or the new one
        print(f"error: writing to {out}/ failed ({os_error(e)}); the same command writes "
              "them again", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files to {out}/")
    return 0
