"""kill -9 at any point, or a full disk or a kill in the middle of a write, then the same command again: the benchmark
resumes and ends with the numbers of an uninterrupted run; two invocations sharing one MLflow store both record all
their runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--preset", "smoke", "--methods", "g2rpo,flowgrpo", "--seeds", "1", "--rounds", "6", "--threads", "1"]
TIMING = ("time/", "wall", "train s")


def command(out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "benchmarks.run", *ARGS, "--out", str(out), *extra]


def numbers(out: Path) -> pd.DataFrame:
    """Table 1 and the paired comparison without the columns that measure time."""
    t = pd.read_csv(out / "table1_main.csv")
    t = t[[c for c in t.columns if not any(k in c for k in TIMING)]]
    return pd.concat([t, pd.read_csv(out / "paired_vs_base.csv")], axis=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    r = subprocess.run(command(out), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def kill_when(out: Path, ready, timeout: float = 300) -> subprocess.Popen:
    proc = subprocess.Popen(command(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not ready() and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the kill point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc


def faulty(fault: str, out: Path) -> list[str]:
    """``command`` with one fault at one write (``tests/faultinject.py``)."""
    return [sys.executable, "-m", "tests.faultinject", fault, "benchmarks.run", *ARGS, "--out", str(out)]


def error_lines(stderr: str) -> list[str]:
    """The lines a failure prints (progress bars share stderr)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


def published(client, run_id: str) -> set[str]:
    """Artifact paths of the comparison on a parent run (tables/, figures/, the README)."""
    return {a.path for folder in ("tables", "figures") for a in client.list_artifacts(run_id, folder)} | {
        a.path for a in client.list_artifacts(run_id)}


@pytest.mark.parametrize("point", ["second_run"])  # a kill inside training: the write-fault chain below
def test_kill_9_then_rerun_resumes_with_identical_numbers(uninterrupted, tmp_path, point):
    import mlflow
    ckpts = tmp_path / "checkpoints"

    def rounds_done() -> int:  # a run's state folder points at its latest round (g2rpo.train_state)
        done = 0
        for f in ckpts.glob("*/latest.json"):
            try:
                done = max(done, json.loads(f.read_text())["round"])
            except (OSError, ValueError):  # being replaced right now
                pass
        return done

    if point == "mid_training":  # inside the first trained run, after some rounds
        kill_when(tmp_path, lambda: rounds_done() >= 3)
    else:  # the first trained run finished, the second one has checkpointed a round
        seen = set()
        kill_when(tmp_path, lambda: seen.update(f.parent.name for f in ckpts.glob("*/latest.json")) or len(seen) >= 2)
    assert not any(tmp_path.glob("*.md")) and not list(tmp_path.glob(".*.tmp"))  # no table yet, no half-written file
    r = subprocess.run(command(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming the interrupted invocation" in r.stdout, r.stdout
    pd.testing.assert_frame_equal(numbers(tmp_path), numbers(uninterrupted))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'parent'")
    children = client.search_runs([exp.experiment_id], "tags.kind = 'child'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert published(client, parents[0].info.run_id) >= {"tables/table1_main.json", "figures/curves.png", "README.md"}
    assert not list(ckpts.glob("*"))  # checkpoints are removed once their run is complete in MLflow


CHAIN = [  # (fault, what ends the process): one after another on one output folder, each resuming the one before
    ("enospc@state#3", 1),  # the 3rd state save of the first trained run: its round 2 stays the latest state
    ("kill@state#2", -9),  # resumed at round 2, killed inside the save of round 4
    ("kill@latest.json#1", -9),  # resumed at round 3, killed as the pointer to round 4 is being replaced
    ("enospc@table1_main.csv#1", 1),  # every run trained and evaluated; the disk is full for the first table
    ("kill@paired_vs_base.csv#1", -9),  # resumed without training, killed half-way through the tables
]


def faulty(fault: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "tests.faultinject", fault, "benchmarks.run", *ARGS, "--out", str(out)]


def whole(out: Path) -> None:
    """Every table and state pointer under ``out`` parses: no file is half-written (temporaries may be)."""
    for f in out.glob("*.csv"):
        assert not pd.read_csv(f).empty, f
    for f in (out / "checkpoints").glob("*/latest.json"):
        folder = f.parent / pd.read_json(f, typ="series")["folder"]
        assert (folder / ".metadata").is_file(), f"{f} points at an incomplete state"


def test_full_disk_and_kill_9_mid_write_then_the_same_command_gives_the_uninterrupted_numbers(uninterrupted, tmp_path):
    import mlflow

    for fault, ends in CHAIN:
        r = subprocess.run(faulty(fault, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == ends, (fault, r.returncode, r.stderr[-2000:])
        if ends == 1:
            (line,) = error_lines(r.stderr)
            assert "No space left on device" in line and "same command" in line and "Traceback" not in r.stderr, line
        whole(tmp_path)
    assert list(tmp_path.glob(".paired_vs_base.csv.*.tmp")), "the kill was not inside the table's write"
    r = subprocess.run(command(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3 of 3 runs already finished" in r.stdout and " rounds, " not in r.stdout, r.stdout  # tables only
    pd.testing.assert_frame_equal(numbers(tmp_path), numbers(uninterrupted))
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "checkpoints").glob("*"))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    (parent,) = client.search_runs([exp.experiment_id], "tags.kind = 'parent'")
    children = client.search_runs([exp.experiment_id], "tags.kind = 'child'")
    assert parent.info.status == "FINISHED" and len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert published(client, parent.info.run_id) >= {"tables/table1_main.json", "tables/paired_vs_base.json"}


def test_two_invocations_share_one_store(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen(command(tmp_path / f"o{i}", "--tracking-uri", uri), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("g2rpo-bench/smoke")
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'parent'")
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    for p in parents:
        kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
        assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids)


def test_store_outage_mid_run_keeps_every_record_for_a_later_sync(uninterrupted, tmp_path, monkeypatch, capsys):
    import torch
    from mlflow import MlflowClient

    from benchmarks import run as bench
    from benchmarks import sync, table

    real, calls, threads = MlflowClient.log_batch, [], torch.get_num_threads()

    def flaky(self, *args, **kw):  # the store answers a few calls, then goes away
        calls.append(1)
        if len(calls) > 12:
            raise ConnectionError("store unreachable")
        return real(self, *args, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    try:
        rc = bench.main([*ARGS, "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert rc == 0 and "the MLflow store became unavailable during the run (store unreachable)" in err, err
    assert "python -m benchmarks.sync" in err and not (tmp_path / "table1_main.md").exists()
    spool = next((tmp_path / "offline").glob("*.jsonl"))
    monkeypatch.setattr(MlflowClient, "log_batch", real)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sync.main([str(spool), "--tracking-uri", uri]) == 0
    assert table.main(["--tracking-uri", uri, "--experiment", "g2rpo-bench/smoke", "--out", str(tmp_path)]) == 0
    pd.testing.assert_frame_equal(numbers(tmp_path), numbers(uninterrupted))
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("g2rpo-bench/smoke").experiment_id], "tags.kind = 'parent'")[0]
    assert published(client, parent.info.run_id) >= {"tables/table1_main.json", "figures/curves.png", "README.md"}
    assert sync.main([str(spool), "--tracking-uri", uri]) == 2  # renamed once synced: no duplicate runs
