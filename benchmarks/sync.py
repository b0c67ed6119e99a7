"""Replay the records a benchmark kept locally while its MLflow store was unavailable:
``python -m benchmarks.sync SPOOL.jsonl --tracking-uri URI``.

Runs created before the outage get the rest of their records; runs started during it are created (under
their parent). A spool is renamed ``*.synced`` afterwards, so syncing twice does not duplicate runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from g2rpo.flags import FlagError, check_writable
from g2rpo.recorder import Recorder
from g2rpo.tracking import open_store


FIELDS = {"start": ("name", "tags", "parent", "parent_id"), "status": ("status",), "params": ("params",),
          "tags": ("tags",), "metrics": ("values", "step"), "artifact": ("path", "folder"), "end": ("status",)}
"""What ``replay`` reads of each kind of record (besides ``run``), as ``Recorder`` writes them."""


def read_spool(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuntimeError(f"{path} is not a readable spool ({type(e).__name__})") from None
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a writer killed mid-write
            continue
    return records


def continued_runs(records: list[dict], path: Path) -> set[str]:
    """The MLflow run ids the records continue (runs created before the outage), which the store must hold;
    RuntimeError for the first record that ``replay`` could not apply, before anything is written."""
    started, ids = set(), set()
    for i, r in enumerate(records, 1):
        fields = FIELDS.get(r.get("op")) if isinstance(r, dict) else None
        if fields is None or any(k not in r for k in ("run", *fields)) or \
                (r["op"] == "artifact" and not Path(r["path"]).is_file()):
            raise RuntimeError(f"{path}: record {i} is not a spool record of a benchmark (or its artifact copy is "
                               f"gone): {json.dumps(r)[:120]}")
        if r["op"] == "start":
            started.add(r["run"])
            if r["parent"] is not None and r["parent"] not in started and r["parent_id"]:
                ids.add(r["parent_id"])
        elif r["run"] not in started:
            if not r.get("run_id"):
                raise RuntimeError(f"{path}: record {i} continues run {r['run']!r}, which was neither created before "
                                   "the outage nor started in the spool")
            ids.add(r["run_id"])
    return ids


def replay(records: list[dict], rec: Recorder) -> int:
    for r in records:
        local = r["run"]
        if local not in rec.ids and r["op"] != "start":
            rec.ids[local] = r["run_id"]
        op = r["op"]
        if op == "start":
            rec.ids.setdefault(r["parent"], r["parent_id"])
            rec.start(local, r["name"], r["tags"], r["parent"])
        elif op == "status":
            rec.client.update_run(rec.ids[local], status=r["status"])
        elif op == "params":
            rec.params(local, r["params"])
        elif op == "tags":
            rec.tags(local, r["tags"])
        elif op == "metrics":
            rec.metrics(local, r["values"], r["step"])
        elif op == "artifact":
            rec.artifact(local, Path(r["path"]), r["folder"])
        elif op == "end":
            rec.end(local, r["status"])
        if rec.failure:
            raise RuntimeError(f"the store failed again during the sync: {rec.failure}")
    return len(records)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sync", description=__doc__.splitlines()[0],
                                 epilog="documentation: docs/reliability.md")
    ap.add_argument("spool", type=Path)
    ap.add_argument("--tracking-uri", required=True)
    a = ap.parse_args(argv)
    try:
        if not a.spool.is_file():
            raise RuntimeError(f"no spool file {a.spool}")
        records = read_spool(a.spool)
        ids = continued_runs(records, a.spool)
        experiment = next((r["experiment"] for r in records if r.get("experiment")), None)
        if experiment is None:
            raise RuntimeError(f"{a.spool} names no experiment")
        check_writable(a.spool, "spool", file=True)  # renamed once synced: else a second sync duplicates the runs
        # runs to continue: then the store and its experiment must exist, not be made anew by a mistyped URI
        client, exp_id = open_store(a.tracking_uri, experiment, a.spool.parent.parent / "mlartifacts", create=not ids)
        for run_id in sorted(ids):
            try:
                found = client.get_run(run_id).info.experiment_id == exp_id
            except Exception:  # MLflow's "not found" differs by backend
                found = False
            if not found:
                raise RuntimeError(f"run {run_id} that {a.spool} continues is not in experiment {experiment!r} of "
                                   f"{a.tracking_uri}; sync into the store the benchmark was writing to")
        n = replay(records, Recorder(client, exp_id, a.spool.with_suffix(".resync.jsonl"), experiment))
    except (RuntimeError, FlagError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.spool.rename(a.spool.with_suffix(".synced"))
    print(f"synced {n} records into {a.tracking_uri} (experiment {experiment}); rebuild the tables with "
          f"python -m benchmarks.table --tracking-uri {a.tracking_uri} --experiment {experiment}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
