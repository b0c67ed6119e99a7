"""Imports point one way (README "Layout"): benchmarks -> eval, baselines -> g2rpo core, eval -> g2rpo; nothing in
g2rpo imports benchmarks, eval or baselines. Every import statement counts, inside functions too."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {"g2rpo": {"g2rpo"}, "baselines": {"baselines", "g2rpo"}, "eval": {"eval", "g2rpo"},
              "benchmarks": {"benchmarks", "eval", "baselines", "g2rpo"}}


def imported(path: Path) -> set[str]:
    """Top-level packages of this project that a module imports (absolute imports; relative ones stay inside)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        out |= {n.split(".")[0] for n in names} & set(MAY_IMPORT)
    return out


def test_imports_point_one_way():
    wrong = [f"{p.relative_to(ROOT)} imports {sorted(bad)}" for pkg, allowed in MAY_IMPORT.items()
             for p in sorted((ROOT / pkg).rglob("*.py")) if (bad := imported(p) - allowed)]
    assert not wrong, "; ".join(wrong)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from benchmarks.run import main\n    import eval.stats\n")
    assert imported(f) == {"benchmarks", "eval"}
