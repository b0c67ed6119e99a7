"""Rerun what a results folder says made it and compare every table cell: ``python -m benchmarks.verify RESULTS_DIR``.

The command is the one its README names (``Made by:``); it is run again into a fresh folder (``--out``, a temporary
one by default) and every CSV both folders hold is compared cell by cell: rows matched by their text columns
(method, reward, ...), numbers within ``--atol`` + ``--rtol`` x |committed| (default: equal as written, six
significant digits), text equal. Wall-clock columns (``WALL_CLOCK``) are listed apart and never compared: they
measure the machine, not the method. ``--methods`` reruns a subset of the rows (the long folders: one method's
seeds instead of the whole table); then only the rows the subset makes are compared, and the cells that depend on
which methods ran together (``SET_DEPENDENT``) are skipped and named. ``--against DIR`` compares with a folder
made earlier instead of rerunning. Exit 1 when a compared cell differs, 2 on bad input.
"""
from __future__ import annotations

import argparse
import math
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from g2rpo.files import write_text
from g2rpo.tracking import git_commit

WALL_CLOCK = re.compile(r"(wall_s|train_s|eval_s|compile_s)(_half_ci)?(\|(mean|std))?$")
"""Columns of seconds (``time/train_s|mean``, ``wall_s``, ...): the machine's speed, not a result; their ``|count``
(how many seeds got there) is a result and is compared."""

SET_DEPENDENT = {"equal_nfe.csv": "its budget is the smallest total NFE of the methods that ran together"}
"""Tables whose cells move with the set of methods in one invocation: compared only when every method is rerun."""

INDEX_COLUMNS = ("seed", "round", "steps", "variant")
"""Numeric columns that identify a row (with the text columns) in tables of one row per seed or step count."""

MADE_ELSEWHERE = {"sweep.csv": "made by python -m benchmarks.sweep (sweep.json names its command)"}


class VerifyError(ValueError):
    """Bad input (one line, exit 2)."""


@dataclass
class Comparison:
    """What one CSV's comparison found."""
    name: str
    rows: int = 0
    cells: int = 0
    max_abs: float = 0.0
    differences: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def recorded(folder: Path) -> tuple[list[str], str]:
    """(argv after ``python -m benchmarks.run``, commit) as the folder's README states them."""
    readme = folder / "README.md"
    if not readme.is_file():
        raise VerifyError(f"{folder} has no README.md: not a folder written by python -m benchmarks.run")
    text = readme.read_text(encoding="utf-8")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("python -m benchmarks.run")), None)
    if line is None:
        raise VerifyError(f"{readme} names no 'python -m benchmarks.run' command")
    commit = re.search(r"git commit `([0-9a-f]+(\+dirty)?)`", text)
    args = shlex.split(line)[3:]
    preset = re.search(r"^# Benchmark results: preset `([^`]+)`", text, re.M)
    if preset and not any(x == "--preset" or x.startswith("--preset=") for x in args):
        args = ["--preset", preset.group(1), *args]  # made under an older default preset: rerun that one, not today's
    return args, commit.group(1) if commit else "unknown"


def without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without the given flags (``--f V`` and ``--f=V`` forms) and their values."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x in flags:
            skip = True
        elif not any(x.startswith(f + "=") for f in flags):
            out.append(x)
    return out


def close(a, b, atol: float, rtol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= atol + rtol * abs(a)
    return a == b


def compare_csv(name: str, committed: pd.DataFrame, rerun: pd.DataFrame, atol: float, rtol: float,
                subset: bool) -> Comparison:
    """Cell-by-cell comparison of one table; with ``subset`` only the rows the rerun made are expected."""
    c = Comparison(name)
    timing = [col for col in committed.columns if WALL_CLOCK.search(col)]
    c.skipped += [f"wall-clock column {col}" for col in timing]
    if subset:  # a column some other method needs (e.g. an official NFE count that differs from ours) may be absent
        gone = [col for col in committed.columns if col not in rerun.columns]
        c.skipped += [f"not made by the subset: column {col}" for col in gone]
        committed, rerun = committed.drop(columns=gone), rerun[[col for col in committed.columns if col not in gone]]
    if list(committed.columns) != list(rerun.columns):
        c.differences.append(f"columns differ: {sorted(set(committed.columns) ^ set(rerun.columns)) or 'order'}")
        return c
    keys = [col for col in committed.columns if not pd.api.types.is_numeric_dtype(committed[col])
            and not pd.api.types.is_numeric_dtype(rerun[col])]
    if keys and committed.duplicated(keys).any():  # one row per (method, seed), say: the index columns name it too
        keys += [col for col in committed.columns if col in INDEX_COLUMNS and col not in keys]

    def keyed(df):
        return {tuple(str(v) for v in r) if keys else (str(i),): i
                for i, r in enumerate(df[keys].itertuples(index=False))} if keys else {(str(i),): i for i in range(len(df))}

    a, b = keyed(committed), keyed(rerun)
    if len(a) != len(committed) or len(b) != len(rerun):
        c.differences.append(f"rows are not unique by {keys}")
        return c
    missing = [k for k in b if k not in a]
    c.differences += [f"row {'/'.join(k)}: only in the rerun" for k in missing]
    if not subset:
        c.differences += [f"row {'/'.join(k)}: only in the committed table" for k in a if k not in b]
    for k, j in b.items():
        if k not in a:
            continue
        i = a[k]
        c.rows += 1
        for col in committed.columns:
            if col in timing or col in keys:
                continue
            x, y = committed[col].iloc[i], rerun[col].iloc[j]
            x, y = (float(x), float(y)) if pd.api.types.is_numeric_dtype(committed[col]) else (str(x), str(y))
            c.cells += 1
            if isinstance(x, float) and not (math.isnan(x) or math.isnan(y)):
                c.max_abs = max(c.max_abs, abs(x - y))
            if not close(x, y, atol, rtol):
                c.differences.append(f"{'/'.join(k)} {col}: committed {x!r}, rerun {y!r}")
    return c


def compare_folders(committed: Path, rerun: Path, atol: float, rtol: float, subset: bool) -> list[Comparison]:
    out = []
    for f in sorted(committed.glob("*.csv")):
        if f.name in MADE_ELSEWHERE:
            out.append(Comparison(f.name, skipped=[MADE_ELSEWHERE[f.name]]))
        elif subset and f.name in SET_DEPENDENT:
            out.append(Comparison(f.name, skipped=[f"a subset rerun: {SET_DEPENDENT[f.name]}"]))
        elif subset and not (rerun / f.name).is_file():  # a pairwise table, or a G2RPO variant not rerun
            out.append(Comparison(f.name, skipped=["not made by the subset: it needs methods or variants not rerun"]))
        elif not (rerun / f.name).is_file():
            out.append(Comparison(f.name, differences=["not made by the rerun"]))
        else:
            out.append(compare_csv(f.name, pd.read_csv(f), pd.read_csv(rerun / f.name), atol, rtol, subset))
    out += [Comparison(f.name, differences=["made by the rerun, not in the committed folder"])
            for f in sorted(rerun.glob("*.csv")) if not (committed / f.name).is_file()]
    return out


def report(results: list[Comparison], limit: int = 20) -> str:
    lines = [f"{'table':<34}{'rows':>6}{'cells':>8}{'max |diff|':>13}  verdict"]
    for c in results:
        verdict = (f"{len(c.differences)} differ" if c.differences else "identical" if c.cells else "not compared")
        lines.append(f"{c.name:<34}{c.rows:>6}{c.cells:>8}{c.max_abs:>13.3g}  {verdict}")
        lines += [f"    differs: {d}" for d in c.differences[:limit]]
        lines += [f"    ... and {len(c.differences) - limit} more"] if len(c.differences) > limit else []
        kinds = dict.fromkeys(s.split(" column ")[0] if " column " in s else s for s in c.skipped)
        lines += [f"    not compared: {k}" + (f" ({n} columns)" if (n := sum(s.startswith(k + ' column') for s in c.skipped))
                                              else "") for k in kinds]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.verify", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/reliability.md")
    ap.add_argument("results", type=Path, help="a folder written by python -m benchmarks.run (its README names the command)")
    ap.add_argument("--methods", help="rerun only these methods (comma-separated), all their seeds; default: every row "
                    "(with --against: the other folder holds only these)")
    ap.add_argument("--against", type=Path, help="compare with this folder instead of rerunning")
    ap.add_argument("--out", type=Path, help="where the rerun writes (default: a temporary folder, removed afterwards)")
    ap.add_argument("--atol", type=float, default=0.0, help="absolute tolerance per cell")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative tolerance per cell (of the committed value)")
    ap.add_argument("--report", type=Path, help="also append what was printed to this markdown file, under a heading")
    ap.add_argument("--dry-run", action="store_true", help="print the command that would be rerun and stop")
    a = ap.parse_args(argv)
    try:
        if not a.results.is_dir():
            raise VerifyError(f"{a.results} is not a folder")
        if a.atol < 0 or a.rtol < 0 or math.isnan(a.atol + a.rtol):
            raise VerifyError("--atol and --rtol must be >= 0")
        if a.against is not None and a.out:
            raise VerifyError("--against compares two folders: it takes no --out")
        if a.against is not None and not (a.against / "README.md").is_file():
            raise VerifyError(f"--against {a.against}: not a folder written by python -m benchmarks.run (no README.md)")
        args, commit = recorded(a.results)
        rerun_args = without(args, ("--out", "--tracking-uri") + (("--methods",) if a.methods else ()))
        rerun_args += ["--methods", a.methods] if a.methods else []
    except VerifyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    now = git_commit()
    if commit != now:
        print(f"note: {a.results} was made at commit {commit}; this checkout is {now}")
    if a.against is not None:
        results = compare_folders(a.results, a.against, a.atol, a.rtol, subset=bool(a.methods))  # a rerun of some
    else:
        with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
            out = a.out or Path(tmp) / "rerun"
            cmd = [sys.executable, "-m", "benchmarks.run", *rerun_args, "--out", str(out)]
            print("rerun: python -m benchmarks.run " + " ".join(shlex.quote(x) for x in cmd[3:]), flush=True)
            if a.dry_run:
                return 0
            # its own process: nothing of this one (threads, caches) reaches the rerun, as in the original invocation
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
                print(f"error: the rerun failed (exit {r.returncode}): {lines[-1] if lines else ''}", file=sys.stderr)
                return r.returncode if r.returncode == 2 else 1
            results = compare_folders(a.results, out, a.atol, a.rtol, subset=bool(a.methods))
    bad = [c for c in results if c.differences]
    cells = sum(c.cells for c in results)
    text = report(results) + "\n" + (
        f"{cells} cells in {sum(bool(c.cells) for c in results)} tables compared (atol {a.atol:g}, rtol {a.rtol:g}): "
        + (f"{sum(len(c.differences) for c in bad)} differences in {len(bad)} tables" if bad else "all equal"))
    print(text)
    if a.report:
        shown_argv = " ".join(shlex.quote(x) for x in without(sys.argv[1:] if argv is None else argv, ("--report",)))
        prior = a.report.read_text() if a.report.is_file() else ""
        write_text(a.report, prior + f"\n## `python -m benchmarks.verify {shown_argv}`\n\n"
                   f"Verified at commit `{now}`; exit {1 if bad else 0}.\n\n```\n{text}\n```\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
