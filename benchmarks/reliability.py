"""Each reliability case and what happened: ``python -m benchmarks.reliability --out results/reliability.md``.

Bad input is run here through the real entry point of every command (exit code and message as printed;
``tests/test_cli_errors.py`` runs the same cases in-process); faults during a run (NaN rewards, kill -9, concurrent
writers, a store outage) are the tests named in the table, run here by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from g2rpo.files import write_text

ROOT = Path(__file__).resolve().parents[1]

PREFIX = {  # fast settings: a check that is missing then fails in seconds instead of training for minutes
    "benchmarks.run": ["--preset", "smoke", "--threads", "1", "--out", "{tmp}/out"],
    "benchmarks.train": ["--preset", "smoke", "--rounds", "1", "--threads", "1"],
    "benchmarks.sweep": ["--preset", "smoke", "--families", "g2rpo", "--lrs", "1e-4", "--rounds", "1", "--threads", "1",
                         "--out", "{tmp}/out"],
    "benchmarks.perf": ["--preset", "smoke", "--reps", "1", "--quick", "--skip-rss", "--threads", "1"],
    "eval.evaluate": ["--tier", "tiny", "--steps", "3", "--threads", "1", "--out", "{tmp}/out"],
    "benchmarks.collect": ["--out", "{tmp}/out"],
    "benchmarks.table": ["--tracking-uri", "sqlite:///{tmp}/store.db", "--experiment", "g2rpo-bench/smoke",
                         "--out", "{tmp}/out"],
    "benchmarks.sync": ["--tracking-uri", "sqlite:///{tmp}/store.db"],
}
"""Flags every case of a command starts with; a case's own flags come after them (and win)."""

BAD_INPUT = [  # (command, case, flags, what the one stderr line must say); {tmp} etc.: ``make_fixtures``
    ("benchmarks.run", "unknown method", ["--methods", "g2rpo,ppo"], "unknown method(s) ppo"),
    ("benchmarks.run", "empty method list", ["--methods", ","], "--methods is empty"),
    ("benchmarks.run", "Λ set with 0", ["--granular-sets", "1;0"], "must be distinct integers >= 1"),
    ("benchmarks.run", "Λ set with a negative", ["--granular-sets=-1"], "must be distinct integers >= 1"),
    ("benchmarks.run", "Λ set with a duplicate", ["--granular-sets", "1,1"], "duplicate values in '1,1'"),
    ("benchmarks.run", "Λ set with a non-integer", ["--granular-sets", "1;1.5"], "'1.5' is not an integer"),
    ("benchmarks.run", "M beyond the schedule", ["--eta-step-sets", "0-20"], "must be distinct steps in [0, N-2]"),
    ("benchmarks.run", "sweep of a knob the method lacks", ["--sweep", "dancegrpo.window_size=2;4"],
     "dancegrpo has no knob 'window_size'"),
    ("benchmarks.run", "sweep value of the wrong type", ["--sweep", "mixgrpo.window_size=2;2.5"],
     "--sweep mixgrpo.window_size: invalid literal"),
    ("benchmarks.run", "sweep value out of range", ["--sweep", "dancegrpo.eta=0.3;-1"], "eta must be in [0, 10)"),
    ("benchmarks.run", "sweep without values", ["--sweep", "dancegrpo.eta"], "expected METHOD.KNOB=V1;V2"),
    ("benchmarks.run", "unknown preset", ["--preset", "huge"], "unknown preset 'huge'"),
    ("benchmarks.run", "seeds < 1", ["--seeds", "0"], "--seeds and --rounds must be >= 1"),
    ("benchmarks.run", "rounds < 1", ["--rounds", "0"], "--seeds and --rounds must be >= 1"),
    ("benchmarks.run", "threads < 1", ["--threads", "0"], "--threads must be >= 1"),
    ("benchmarks.run", "step counts not integers", ["--inference-steps", "ten"], "--inference-steps: expected"),
    ("benchmarks.run", "learning rate out of range", ["--lr", "2"], "--lr must be in (0, 1)"),
    ("benchmarks.run", "output folder not writable", ["--out", "{tmp}/file/sub"],
     "--out '{tmp}/file/sub' is not writable"),
    ("benchmarks.run", "MLflow store cannot be opened", ["--tracking-uri", "sqlite:///{tmp}/bad.db"],
     "cannot open the MLflow store"),

    ("benchmarks.train", "unknown method", ["--method", "ppo"], "unknown method 'ppo'"),
    ("benchmarks.train", "threads 0", ["--threads", "0"], "--threads must be >= 1"),
    ("benchmarks.train", "threads negative", ["--threads", "-2"], "--threads must be >= 1"),
    ("benchmarks.train", "rounds 0", ["--rounds", "0"], "--rounds must be >= 1"),
    ("benchmarks.train", "seed negative", ["--seed", "-1"], "--seed must be >= 0"),
    ("benchmarks.train", "EMA interval negative", ["--ema-update-step-interval", "-1"],
     "--ema-update-step-interval must be >= 0"),
    ("benchmarks.train", "--save not writable", ["--save", "{tmp}/file/m.safetensors"],
     "--save '{tmp}/file/m.safetensors' is not writable"),
    ("benchmarks.train", "--save is a folder", ["--save", "{tmp}/empty"], "--save '{tmp}/empty' is a folder"),
    ("benchmarks.train", "--save named like its sidecar", ["--save", "{tmp}/out/m.json"], "--save '{tmp}/out/m.json':"),
    ("benchmarks.train", "--checkpoint not writable", ["--checkpoint", "{tmp}/file/state"],
     "--checkpoint '{tmp}/file/state' is not writable"),
    ("benchmarks.train", "--mlflow not a store", ["--mlflow", "sqlite:///{tmp}/bad.db"],
     "cannot open the MLflow store"),
    ("benchmarks.train", "unknown model with a store", ["--model", "nope", "--mlflow", "sqlite:///{tmp}/new.db"],
     "model tier 'nope' cannot be loaded here"),

    ("benchmarks.sweep", "unknown family", ["--families", "nope"], "--families: unknown ['nope']"),
    ("benchmarks.sweep", "--lrs not numbers", ["--lrs", "abc"], "--lrs: expected"),
    ("benchmarks.sweep", "--lrs empty", ["--lrs", ","], "--lrs: expected"),
    ("benchmarks.sweep", "--lrs out of range", ["--lrs", "1e-4,2"], "--lrs: expected"),
    ("benchmarks.sweep", "--lrs repeated", ["--lrs", "1e-4,1e-4"], "--lrs: expected"),
    ("benchmarks.sweep", "rounds 0", ["--rounds", "0"], "--rounds must be >= 1"),
    ("benchmarks.sweep", "seed negative", ["--seed", "-5"], "--seed must be >= 0"),
    ("benchmarks.sweep", "threads 0", ["--threads", "0"], "--threads must be >= 1"),
    ("benchmarks.sweep", "--out not writable", ["--out", "{tmp}/file/sub"], "--out '{tmp}/file/sub' is not writable"),
    ("benchmarks.sweep", "MLflow store cannot be opened", ["--tracking-uri", "sqlite:///{tmp}/bad.db"],
     "cannot open the MLflow store"),

    ("benchmarks.perf", "unknown preset", ["--preset", "huge"], "unknown preset 'huge'"),
    ("benchmarks.perf", "threads 0", ["--threads", "0"], "--threads must be >= 1"),
    ("benchmarks.perf", "reps 0", ["--reps", "0"], "--reps must be >= 1"),
    ("benchmarks.perf", "--out not writable", ["--out", "{tmp}/file/perf.md"],
     "--out '{tmp}/file/perf.md' is not writable"),
    ("benchmarks.perf", "--out is a folder", ["--out", "{tmp}/empty"], "--out '{tmp}/empty' is a folder"),
    ("benchmarks.perf", "--signal missing", ["--signal", "{tmp}/missing.csv"],
     "--signal {tmp}/missing.csv does not exist"),
    ("benchmarks.perf", "--signal not a signal table", ["--signal", "{tmp}/signal.csv"], "is not a time_to_signal.csv"),

    ("eval.evaluate", "steps 0", ["--steps", "0"], "--steps must be >= 1"),
    ("eval.evaluate", "images per prompt 0", ["--images-per-prompt", "0"], "--images-per-prompt must be >= 1"),
    ("eval.evaluate", "threads 0", ["--threads", "0"], "--threads must be >= 1"),
    ("eval.evaluate", "seed negative", ["--seed", "-1"], "--seed must be >= 0"),
    ("eval.evaluate", "shift 0", ["--shift", "0"], "--shift must be > 0"),
    ("eval.evaluate", "shift negative", ["--shift=-3"], "--shift must be > 0"),
    ("eval.evaluate", "shift nan", ["--shift", "nan"], "--shift must be > 0"),
    ("eval.evaluate", "prompt file missing", ["--prompts", "{tmp}/missing.txt"],
     "neither heldout nor train nor a readable"),
    ("eval.evaluate", "prompt file empty", ["--prompts", "{tmp}/empty.txt"], "holds no prompts"),
    ("eval.evaluate", "checkpoint missing", ["--checkpoint", "{tmp}/missing.safetensors"], "is missing or unreadable"),
    ("eval.evaluate", "--reward-dir not a folder", ["--reward-dir", "{tmp}/file"],
     "--reward-dir {tmp}/file is not a folder"),
    ("eval.evaluate", "--out not writable", ["--out", "{tmp}/file/sub"], "--out '{tmp}/file/sub' is not writable"),
    ("eval.evaluate", "MLflow store cannot be opened", ["--tracking-uri", "sqlite:///{tmp}/bad.db"],
     "cannot open the MLflow store"),

    ("benchmarks.collect", "folder missing", ["{tmp}/missing"], "is not an evaluation written by"),
    ("benchmarks.collect", "folder not an evaluation", ["{tmp}/empty"], "is not an evaluation written by"),
    ("benchmarks.collect", "a file instead of a folder", ["{tmp}/file"], "is not an evaluation written by"),
    ("benchmarks.collect", "--out not writable", ["{tmp}/empty", "--out", "{tmp}/file/sub"],
     "--out '{tmp}/file/sub' is not writable"),
    ("benchmarks.collect", "--out is a file", ["{tmp}/empty", "--out", "{tmp}/file"],
     "--out '{tmp}/file' is not writable"),

    ("benchmarks.table", "store file missing", ["--tracking-uri", "sqlite:///{tmp}/missing.db"], "no MLflow store at"),
    ("benchmarks.table", "not a store", ["--tracking-uri", "sqlite:///{tmp}/bad.db"], "cannot open the MLflow store"),
    ("benchmarks.table", "unknown experiment", ["--experiment", "g2rpo-bench/typo"],
     "no experiment 'g2rpo-bench/typo'"),
    ("benchmarks.table", "--parent-run-id unknown", ["--parent-run-id", "0123456789abcdef0123456789abcdef"],
     "--parent-run-id 0123456789abcdef0123456789abcdef: no such run"),
    ("benchmarks.table", "--parent-run-id of another experiment", ["--parent-run-id", "{other_run}"],
     "--parent-run-id {other_run}: a run of another experiment"),
    ("benchmarks.table", "--parent-run-id not an invocation", ["--parent-run-id", "{sweep_run}"],
     "--parent-run-id {sweep_run}: not a benchmark invocation"),
    ("benchmarks.table", "--out not writable", ["--out", "{tmp}/file/sub"], "--out '{tmp}/file/sub' is not writable"),

    ("benchmarks.sync", "spool missing", ["{tmp}/missing.jsonl"], "no spool file {tmp}/missing.jsonl"),
    ("benchmarks.sync", "spool is a folder", ["{tmp}/empty"], "no spool file {tmp}/empty"),
    ("benchmarks.sync", "spool not text", ["{tmp}/binary.jsonl"], "{tmp}/binary.jsonl is not a readable spool"),
    ("benchmarks.sync", "spool names no experiment", ["{tmp}/noexp.jsonl"], "names no experiment"),
    ("benchmarks.sync", "spool record malformed", ["{tmp}/malformed.jsonl"], "record 1 is not a spool record"),
    ("benchmarks.sync", "spool continues a run the store lacks", ["{tmp}/gone.jsonl"],
     "run 0123456789abcdef0123456789abcdef"),
    ("benchmarks.sync", "MLflow store cannot be opened",
     ["{tmp}/fresh.jsonl", "--tracking-uri", "sqlite:///{tmp}/bad.db"], "cannot open the MLflow store"),
]


def make_fixtures(tmp: Path) -> dict[str, str]:
    """The files the cases point at, made in ``tmp``; returns the keys their flags are formatted with."""
    import mlflow

    (tmp / "file").write_text("x")
    (tmp / "bad.db").write_text("not a database")
    (tmp / "empty").mkdir()
    (tmp / "empty.txt").write_text("\n")
    (tmp / "signal.csv").write_text("not,the,columns\n1,2,3\n")
    (tmp / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x81 not text")
    exp = "g2rpo-bench/smoke"
    start = {"op": "start", "run": "parent", "name": "p", "tags": {}, "parent": None, "parent_id": None, "run_id": None}
    (tmp / "noexp.jsonl").write_text(json.dumps(start | {"experiment": ""}) + "\n")
    (tmp / "fresh.jsonl").write_text(json.dumps(start | {"experiment": exp}) + "\n")
    (tmp / "malformed.jsonl").write_text(json.dumps({"op": "explode", "run": "parent", "experiment": exp}) + "\n")
    (tmp / "gone.jsonl").write_text(json.dumps({"op": "metrics", "run": "child", "values": {"loss": 1.0}, "step": 0,
                                               "run_id": "0123456789abcdef0123456789abcdef", "experiment": exp}) + "\n")
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'store.db'}")  # a client, not mlflow's process-wide URI
    sweep = client.create_run(client.create_experiment(exp), tags={"kind": "sweep"}).info.run_id
    other = client.create_run(client.create_experiment("elsewhere"), tags={"kind": "parent"}).info.run_id
    return {"tmp": str(tmp), "sweep_run": sweep, "other_run": other}


def invocation(command: str, args: list[str], keys: dict[str, str]) -> list[str]:
    return [a.format(**keys) for a in PREFIX.get(command, []) + args]


def case_id(case: tuple) -> str:
    """A pytest id: the command's last name and the case, in ASCII."""
    name = case[1].replace("Λ", "Lambda").replace("η", "eta")
    return case[0].split(".")[-1] + "-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def written(root: Path) -> set[Path]:
    """Files under ``root`` but the lock open_store takes beside a sqlite store (not output)."""
    return {p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def bad_input_rows() -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        keys = make_fixtures(Path(tmp))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        for command, name, args, _ in BAD_INPUT:
            before = written(Path(tmp))
            r = subprocess.run([sys.executable, "-m", command, *invocation(command, args, keys)], cwd=tmp, env=env,
                               capture_output=True, text=True)
            new = written(Path(tmp)) - before
            for f in new:  # the next case starts from the fixtures alone
                f.unlink()
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            shown = " ".join(a.format(**keys) for a in args).replace(tmp, "$TMP")
            msg = (lines[-1] if lines else "").replace(tmp, "$TMP").replace("|", "/")
            trace = "yes" if "Traceback" in r.stderr else "no"
            rows.append(f"| `{command}` | {name} | `{shown}` | {r.returncode} | {len(lines)} | {trace} | {len(new)} "
                        f"| {msg} |")
    return rows


FAULT_TESTS = [
    ("group size < 2", "tests/test_faults.py::test_group_of_one_is_refused"),
    ("η, noise level, clip range or advantage clip out of range", "tests/test_faults.py::test_out_of_range_knobs_are_refused"),
    ("missing, truncated or wrong-architecture model file",
     "tests/test_pocket.py::test_bad_generator_files_give_one_clear_line"),
    ("corrupt model file through the runner: exit 2 before training",
     "tests/test_runner.py::test_corrupt_model_file_fails_before_training"),
    ("NaN rewards for some images: masked out of the advantages, counted, weights stay finite",
     "tests/test_faults.py::test_some_nan_rewards_are_masked_and_weights_stay_finite"),
    ("NaN/inf excluded from group statistics (closed form)",
     "tests/test_faults.py::test_masked_group_zscore_is_the_zscore_of_the_finite_rewards"),
    ("too few finite rewards: the round is skipped, weights untouched",
     "tests/test_faults.py::test_too_few_finite_rewards_skip_the_round"),
    ("a reward with no finite value: one-line error, exit 1, finished runs and earlier tables kept",
     "tests/test_runner.py::test_nan_reward_fails_cleanly_and_keeps_finished_runs"),
    ("kill -9 between runs, then the same command: identical numbers",
     "tests/test_resume.py::test_kill_9_then_rerun_resumes_with_identical_numbers"),
    ("a full disk and kill -9 in the middle of a training-state save, of its pointer and of a table (one after "
     "another on one folder; `tests/faultinject.py`): one `error:` line or a dead process, every file whole, then the "
     "same command: identical numbers, tables written without training again",
     "tests/test_resume.py::test_full_disk_and_kill_9_mid_write_then_the_same_command_gives_the_uninterrupted_numbers"),
    ("a full disk during a training-state save of `benchmarks.train --checkpoint`: one line, exit 1, the previous "
     "round's state kept; the same command resumes to the uninterrupted weights, bit for bit",
     "tests/test_distributed.py::test_full_disk_during_a_state_save_is_one_line_then_the_same_command_resumes_exactly"),
    ("a full disk while a table is written: the old file stays whole, one line, exit 1",
     "tests/test_faults.py::test_a_full_disk_mid_write_keeps_the_old_file_and_is_one_line"),
    ("a corrupt MLflow store under finished results: exit 2, one line, every file unchanged",
     "tests/test_write_faults.py::test_a_corrupt_store_stops_with_one_line_and_nothing_changes"),
    ("a store locked by another process: exit 2, one line, every file unchanged; once released it opens unharmed",
     "tests/test_write_faults.py::test_a_locked_store_stops_with_one_line_and_opens_unharmed_once_released"),
    ("two invocations writing to one MLflow store at once: both record all runs",
     "tests/test_resume.py::test_two_invocations_share_one_store"),
    ("MLflow store unavailable mid-run: training goes on, records spooled, sync restores identical tables",
     "tests/test_resume.py::test_store_outage_mid_run_keeps_every_record_for_a_later_sync"),
]


def fault_rows() -> list[str]:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", *[t for _, t in FAULT_TESTS]], cwd=ROOT,
                       capture_output=True, text=True)
    outcome: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR) (\S+)", line)
        if m:
            outcome.setdefault(m.group(2).split("[")[0], []).append(m.group(1))
    rows = []
    for name, test in FAULT_TESTS:
        got = outcome.get(test, ["NOT RUN"])
        verdict = f"passed ({len(got)} of {len(got)})" if set(got) == {"PASSED"} else ", ".join(got)
        rows.append(f"| {name} | `{test.split('::')[1]}` | {verdict} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/reliability.md")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "reliability.md")
    a = ap.parse_args(argv)
    prefixes = "; ".join(f"`{c}` {' '.join(f).replace('{tmp}', '$TMP')}" for c, f in PREFIX.items())
    lines = ["# Reliability", "", "Made by `python -m benchmarks.reliability` (bad input through the real entry point; faults "
             "by the named tests).", "", "## Bad input: one line, exit code 2, no traceback, nothing loaded or written", "",
             f"Each command starts with fast flags, the case's come after them (and win): {prefixes}.", "",
             "| command | case | flags | exit | stderr lines | traceback | files written | message |",
             "|---|---|---|---|---|---|---|---|", *bad_input_rows(), "", "## Faults", "", "| case | test | outcome |",
             "|---|---|---|", *fault_rows(), ""]
    write_text(a.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
