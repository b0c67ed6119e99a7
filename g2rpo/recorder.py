"""MLflow records that survive the store going away mid-run.

Every record goes to the store through ``Recorder``. After the first failed call the recorder stops trying
and appends every record (and a copy of every artifact) to a local spool instead, so training and evaluation
go on; ``python -m benchmarks.sync SPOOL --tracking-uri URI`` replays the spool once the store is back.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path


class Recorder:
    """Runs are named by local ids; a run created while the store was reachable also has its MLflow run id."""

    def __init__(self, client, exp_id: str, spool: Path, experiment: str = "") -> None:
        self.client, self.exp_id, self.spool, self.experiment = client, exp_id, Path(spool), experiment
        self.ids: dict[str, str | None] = {}
        self.failure: str | None = None
        """The first error of the store, once it became unavailable."""
        self.spooled = 0

    def _do(self, record, call):
        """``call()`` while the store answers; after its first failure, append ``record`` (a dict, or a function
        making one, for records that cost work only when spooled) to the spool instead."""
        if self.failure is None:
            try:
                return call()
            except Exception as e:  # any backend failure: go offline, keep everything locally
                msg = str(e).strip()
                self.failure = msg.splitlines()[0] if msg else type(e).__name__
        record = record() if callable(record) else record
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool, "a") as f:
            f.write(json.dumps(record | {"run_id": self.ids.get(record.get("run")), "experiment": self.experiment}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.spooled += 1
        return None

    def start(self, local: str, name: str, tags: dict, parent: str | None = None, resume_id: str | None = None) -> None:
        if resume_id:
            self.ids[local] = resume_id
            self._do({"op": "status", "run": local, "status": "RUNNING"},
                     lambda: self.client.update_run(resume_id, status="RUNNING"))
            return
        all_tags = tags | ({"mlflow.parentRunId": self.ids[parent]} if parent and self.ids.get(parent) else {})
        run = self._do({"op": "start", "run": local, "name": name, "tags": tags, "parent": parent,
                        "parent_id": self.ids.get(parent)},
                       lambda: self.client.create_run(self.exp_id, run_name=name, tags=all_tags))
        self.ids[local] = run.info.run_id if run is not None else None

    def params(self, local: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self._do({"op": "params", "run": local, "params": params},
                 lambda: self.client.log_batch(self.ids[local], params=[Param(k, v) for k, v in params.items()]))

    def tags(self, local: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._do({"op": "tags", "run": local, "tags": tags},
                 lambda: self.client.log_batch(self.ids[local], tags=[RunTag(k, v) for k, v in tags.items()]))

    def metrics(self, local: str, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        self._do({"op": "metrics", "run": local, "values": values, "step": step, "timestamp": ms},
                 lambda: self.client.log_batch(self.ids[local], metrics=[Metric(k, float(v), ms, step) for k, v in values.items()]))

    def artifact(self, local: str, path: Path, folder: str) -> None:
        def spooled_copy() -> str:  # the original lives in a temporary folder
            dest = self.spool.with_suffix("") / f"{self.spooled:06d}" / Path(path).name  # the name is the artifact's
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            return str(dest)

        self._do(lambda: {"op": "artifact", "run": local, "path": spooled_copy(), "folder": folder},
                 lambda: self.client.log_artifact(self.ids[local], str(path), folder))

    def end(self, local: str, status: str = "FINISHED") -> None:
        self._do({"op": "end", "run": local, "status": status},
                 lambda: self.client.set_terminated(self.ids[local], status=status))

    def run_id(self, local: str) -> str | None:
        return self.ids.get(local)
