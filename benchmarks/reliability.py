"""Each reliability case and what happened: ``python -m benchmarks.reliability --out results/reliability.md``.

Bad input is run here through the real entry point (exit code and message as printed); faults during a run
(NaN rewards, kill -9, concurrent writers, a store outage) are the tests named in the table, run here by pytest.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from g2rpo.files import write_text

ROOT = Path(__file__).resolve().parents[1]

BAD_INPUT = [
    ("unknown method", ["--methods", "g2rpo,ppo"]),
    ("empty method list", ["--methods", ","]),
    ("Λ set with 0", ["--granular-sets", "1;0"]),
    ("Λ set with a negative", ["--granular-sets=-1"]),
    ("Λ set with a duplicate", ["--granular-sets", "1,1"]),
    ("Λ set with a non-integer", ["--granular-sets", "1;1.5"]),
    ("M beyond the schedule", ["--eta-step-sets", "0-20"]),
    ("sweep of a knob the method lacks", ["--sweep", "dancegrpo.window_size=2;4"]),
    ("sweep value of the wrong type", ["--sweep", "mixgrpo.window_size=2;2.5"]),
    ("sweep value out of range", ["--sweep", "dancegrpo.eta=0.3;-1"]),
    ("sweep without values", ["--sweep", "dancegrpo.eta"]),
    ("unknown preset", ["--preset", "huge"]),
    ("seeds < 1", ["--seeds", "0"]),
    ("learning rate out of range", ["--lr", "2"]),
    ("output folder not writable", ["--out", "{tmp}/file/sub"]),
    ("MLflow store cannot be opened", ["--out", "{tmp}/o", "--tracking-uri", "sqlite:///{tmp}/bad.db"]),
]

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
    ("kill -9 mid-training or between runs, then the same command: identical numbers",
     "tests/test_resume.py::test_kill_9_then_rerun_resumes_with_identical_numbers"),
    ("two invocations writing to one MLflow store at once: both record all runs",
     "tests/test_resume.py::test_two_invocations_share_one_store"),
    ("MLflow store unavailable mid-run: training goes on, records spooled, sync restores identical tables",
     "tests/test_resume.py::test_store_outage_mid_run_keeps_every_record_for_a_later_sync"),
]


def bad_input_rows() -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "file").write_text("x")
        (Path(tmp) / "bad.db").write_text("not a database")
        for name, args in BAD_INPUT:
            args = [a.format(tmp=tmp) for a in args]
            r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--preset", "smoke", *args], cwd=ROOT,
                               capture_output=True, text=True)
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            shown = " ".join(args).replace(tmp, "$TMP")
            msg = (lines[-1] if lines else "").replace(tmp, "$TMP").replace("|", "/")
            trace = "yes" if "Traceback" in r.stderr else "no"
            rows.append(f"| {name} | `{shown}` | {r.returncode} | {len(lines)} | {trace} | {msg} |")
    return rows


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
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "reliability.md")
    a = ap.parse_args(argv)
    lines = ["# Reliability", "", "Made by `python -m benchmarks.reliability` (bad input through the real entry point; faults "
             "by the named tests).", "", "## Bad input: one line, exit code 2, no traceback, nothing loaded or written", "",
             "| case | flags after `python -m benchmarks.run --preset smoke` | exit | stderr lines | traceback | message |",
             "|---|---|---|---|---|---|", *bad_input_rows(), "", "## Faults", "", "| case | test | outcome |", "|---|---|---|",
             *fault_rows(), ""]
    write_text(a.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
