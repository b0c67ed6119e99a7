"""The numbers in README.md and docs/, rendered from the code and the committed results: ``python -m benchmarks.docs``.

A page marks each rendered block ``<!-- render: NAME ARG -->`` ... ``<!-- /render -->``; this command rewrites the
blocks between the marks from their source (``RENDERERS``), and ``--check`` writes nothing and exits 1 naming every
block that differs from what it would render (``tests/test_docs.py`` runs it, so a committed page cannot go stale).
Numbers outside blocks cite the results file they come from.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import sys
import textwrap
from pathlib import Path

import pandas as pd

from g2rpo.files import write_text
from g2rpo.registry import METHODS

from .leaderboard import folder_rows
from .plan import describe
from .render import to_markdown
from .run import parse_args, resolve

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- render: ([\w-]+)(?: ([^>]*?))? -->\n)(.*?)(<!-- /render -->)", re.S)


def link(path: Path, base: Path) -> str:
    """``path`` as a link from a page in ``base``."""
    return Path(os.path.relpath(path, base)).as_posix()


def glance(folder: str, base: Path) -> str:
    """A results folder's headline table (``benchmarks.leaderboard``'s rows) and where it comes from."""
    d = ROOT / folder
    rows = folder_rows(d)
    if not rows:
        raise ValueError(f"{folder} holds no tables")
    df = pd.DataFrame(rows)
    seeds = re.search(r"training seeds per row: ([\d, ]+);", (d / "README.md").read_text())
    metric = df.metric.iloc[0]
    return (f"{metric[:1].upper() + metric[1:]}, mean over {seeds.group(1) if seeds else '?'} training seeds; Δ paired "
            f"with the base model, 95% bootstrap interval; from [`{folder}/`]({link(d / 'README.md', base)}), made by "
            f"{df.command.iloc[0]}.\n\n" + to_markdown(df[["method", "score", "Δ vs base [95% CI]", "NFE/round"]]))


def costs(preset: str, base: Path) -> str:
    """Every registered method's cost per prompt and round on a preset, as ``benchmarks.run --dry-run`` plans it."""
    p, runs, _ = resolve(parse_args(["--preset", preset, "--methods", "all", "--seeds", "1"]))
    rows = describe(runs, p)
    df = pd.DataFrame([{"method": r["method"], "rollout NFE": r["nfe_rollout_per_prompt"],
                        "(official loop)": r["nfe_rollout_per_prompt_official"]
                        if r["nfe_rollout_per_prompt_official"] != r["nfe_rollout_per_prompt"] else "",
                        "train NFE": r["nfe_train_per_prompt"], "reference NFE": r["nfe_reference_per_prompt"] or "",
                        "images scored": r["images_scored_per_prompt"], "optimizer steps": r["optimizer_steps_per_round"],
                        "NFE per round": r["nfe_per_round"]} for r in rows])
    return (f"Per prompt and round on preset `{preset}` (`python -m benchmarks.run --preset {preset} --methods all "
            f"--dry-run`); NFE per round: all of the round's prompts.\n\n" + to_markdown(df))


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it), the nearest class in the MRO first."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def shown(v) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(map(shown, v)) + ")"
    if dataclasses.is_dataclass(v):
        return type(v).__name__ + "(" + ", ".join(f"{f.name}={shown(getattr(v, f.name))}" for f in dataclasses.fields(v)) + ")"
    return str(getattr(v, "value", v))


def knobs(method: str, base: Path) -> str:
    """A registered method's knobs: name, official default (its config's), what it is (the field's docstring)."""
    cls = METHODS[method].method.config_class
    cfg, docs = cls(), field_docs(cls)
    df = pd.DataFrame([{"knob": f"`{f.name}`", "default": f"`{shown(getattr(cfg, f.name))}`",
                        "what": docs.get(f.name, "").replace("|", "\\|")} for f in dataclasses.fields(cls)])
    return f"`{cls.__name__}` (`{cls.__module__}`), defaults as the official code:\n\n" + to_markdown(df)


def table(arg: str, base: Path) -> str:
    """``PATH [N]``: the N-th (default first) markdown table of a committed results file, with its source named."""
    path, _, n = arg.partition(" ")
    tables = re.findall(r"(?:^\|.*\|\n)+", (ROOT / path).read_text(encoding="utf-8"), re.M)
    k = int(n or 1)
    if not 1 <= k <= len(tables):
        raise ValueError(f"{path} has {len(tables)} tables, not a table {k}")
    return f"From [`{path}`]({link(ROOT / path, base)}):\n\n" + tables[k - 1].rstrip("\n")


RENDERERS = {"glance": glance, "costs": costs, "knobs": knobs, "table": table}
"""What a block may render, by the name after ``render:``; each takes the rest of the mark as its argument and the
page's folder (links are relative to it)."""


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render_page(text: str, page: Path) -> str:
    def one(m: re.Match) -> str:
        name, arg = m.group(2), (m.group(3) or "").strip()
        if name not in RENDERERS:
            raise ValueError(f"{page.name}: unknown block 'render: {name}'; known: {', '.join(RENDERERS)}")
        return m.group(1) + RENDERERS[name](arg, page.parent).rstrip("\n") + "\n" + m.group(5)

    return BLOCK.sub(one, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.docs", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/architecture.md")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each page whose blocks are stale")
    a = ap.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        try:
            new = render_page(text, page)
        except (ValueError, KeyError, OSError) as e:
            print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
            return 2
        if new != text:
            stale.append(page.relative_to(ROOT).as_posix())
            if not a.check:
                write_text(page, new)
    verb = "stale (python -m benchmarks.docs renders them)" if a.check else "rendered"
    print(f"{verb}: {', '.join(stale)}" if stale else "every rendered block is up to date")
    return 1 if a.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
