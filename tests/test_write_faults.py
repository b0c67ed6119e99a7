"""A corrupt and a locked MLflow store under a finished output folder: one clear line, every file as it was, and (once
the lock is gone) the store opens unharmed. Faults while results are written: ``tests/test_resume.py``."""
import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_resume import ROOT, error_lines

pytestmark = pytest.mark.slow


def digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture
def finished(tmp_path):
    """An output folder as a finished benchmark leaves it: its store (with the experiment) and tables."""
    from g2rpo.tracking import open_store

    out = tmp_path / "out"
    out.mkdir()
    open_store(f"sqlite:///{out / 'mlflow.db'}", "g2rpo-bench/smoke", out / "mlartifacts")
    for name in ("table1_main.csv", "paired_vs_base.csv"):
        (out / name).write_text("method,score\nbase,0.5\n")
    (out / "README.md").write_text("# Benchmark results\n")
    return out


SMALL = ["--preset", "smoke", "--methods", "g2rpo", "--seeds", "1", "--rounds", "1", "--threads", "1"]


def test_a_corrupt_store_stops_with_one_line_and_nothing_changes(finished):
    db = finished / "mlflow.db"
    with open(db, "r+b") as f:  # a torn page over the header: sqlite no longer knows the file
        f.write(b"\x00garbage" * 16)
    before = digests(finished)
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", *SMALL, "--out", str(finished)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = error_lines(r.stderr)
    assert "cannot open the MLflow store" in line and "not a database" in line, line
    assert digests(finished) == before


def test_a_locked_store_stops_with_one_line_and_opens_unharmed_once_released(finished):
    before = digests(finished)  # first: closing any descriptor of the file drops this process's sqlite (POSIX) locks
    holder = sqlite3.connect(finished / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program writing to the store, for longer than open_store waits
    cmd = [sys.executable, "-m", "benchmarks.run", *SMALL, "--out", str(finished)]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = error_lines(r.stderr)
    assert "database is locked" in line and "another process" in line, line
    assert digests(finished) == before
    from g2rpo.tracking import open_store  # released: the store the command stopped on opens, unharmed

    client, _ = open_store(f"sqlite:///{finished / 'mlflow.db'}", "g2rpo-bench/smoke", None, create=False)
    assert client.get_experiment_by_name("g2rpo-bench/smoke") is not None
