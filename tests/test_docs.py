"""The docs cannot go stale: rendered blocks equal what ``benchmarks.docs`` renders, ``results/README.md`` what
``benchmarks.leaderboard`` renders; every relative link resolves; the README stays one or two screens and maps every
docs page; every module says what it is for in its docstring's first one or two lines."""
import ast
import re
from pathlib import Path

import pytest

from benchmarks import docs, leaderboard

ROOT = Path(__file__).resolve().parents[1]
PAGES = docs.pages()
README_LINES = 140
"""One or two screens, code blocks and the results table included."""


def test_every_rendered_block_is_what_the_command_renders(capsys):
    assert docs.main(["--check"]) == 0, capsys.readouterr().out


def test_the_results_leaderboard_is_what_the_command_renders():
    assert (ROOT / "results" / "README.md").read_text() == leaderboard.render(ROOT / "results"), \
        "results/README.md is stale: python -m benchmarks.leaderboard"


def test_a_block_that_differs_is_named_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    page = tmp_path / "README.md"
    page.write_text("x\n<!-- render: costs smoke -->\nold numbers\n<!-- /render -->\n")
    monkeypatch.setattr(docs, "pages", lambda: [page])
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    assert docs.main(["--check"]) == 1 and "README.md" in capsys.readouterr().out
    assert "old numbers" in page.read_text()
    assert docs.main([]) == 0 and "old numbers" not in page.read_text() and "| g2rpo |" in page.read_text()
    assert docs.main(["--check"]) == 0


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: link to {target} does not resolve"


def test_the_readme_fits_two_screens_and_maps_every_docs_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in text, f"README.md does not link docs/{page.name}"


def test_every_module_says_what_it_is_for_first():
    for pkg in ("g2rpo", "baselines", "benchmarks", "eval"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc, f"{path.relative_to(ROOT)} has no module docstring"
            assert len(doc.strip().split("\n\n")[0].splitlines()) <= 2, \
                f"{path.relative_to(ROOT)}: the docstring's first paragraph is longer than two lines"


def test_ci_runs_exactly_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    test = re.search(r"## Test\n\n```bash\n(.*?)\n```", readme, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert ci == test, (ci, test)


def test_every_commands_help_names_its_docs_page():
    for path in sorted([*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "eval").rglob("*.py")]):
        text = path.read_text()
        if "ArgumentParser(" not in text:
            continue
        page = re.search(r'epilog="documentation: (docs/[\w-]+\.md)"', text)
        assert page and (ROOT / page.group(1)).is_file(), f"{path.relative_to(ROOT)}: --help names no docs page"
