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

from g2rpo.recorder import Recorder
from g2rpo.tracking import open_store


def read_spool(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a writer killed mid-write
            continue
    return records


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
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sync", description=__doc__.splitlines()[0])
    ap.add_argument("spool", type=Path)
    ap.add_argument("--tracking-uri", required=True)
    a = ap.parse_args(argv)
    try:
        if not a.spool.is_file():
            raise RuntimeError(f"no spool file {a.spool}")
        records = read_spool(a.spool)
        experiment = next((r["experiment"] for r in records if r.get("experiment")), None)
        if experiment is None:
            raise RuntimeError(f"{a.spool} names no experiment")
        client, exp_id = open_store(a.tracking_uri, experiment, a.spool.parent.parent / "mlartifacts")
        n = replay(records, Recorder(client, exp_id, a.spool.with_suffix(".resync.jsonl"), experiment))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.spool.rename(a.spool.with_suffix(".synced"))
    print(f"synced {n} records into {a.tracking_uri} (experiment {experiment}); rebuild the tables with "
          f"python -m benchmarks.table --tracking-uri {a.tracking_uri} --experiment {experiment}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
