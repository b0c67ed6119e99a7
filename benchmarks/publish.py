"""The comparison where MLflow's users look: every table, figure and the results README on the invocation's parent run.

Tables go to ``tables/<stem>.json`` in the format ``MlflowClient.log_table`` writes (pandas 'split' orient, listed in
the run's ``mlflow.loggedArtifacts`` tag), so ``mlflow.load_table`` returns them and the UI shows them; their markdown
and LaTeX beside them, figures under ``figures/``, the README at the root. ``log_table`` itself appends to a table
that exists, which would double every row when the tables are rebuilt; writing the file and logging it as an
artifact replaces it instead, so publishing twice gives the same run.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from g2rpo.files import atomic

LOGGED = "mlflow.loggedArtifacts"


def publish(client, run_id: str, files: list[Path]) -> list[str]:
    """Log ``files`` (the tables' .csv/.md/.tex, the .png figures, README.md) on the run; returns the artifact paths."""
    logged, tables = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            if f.suffix == ".csv":
                path = Path(tmp) / f"{f.stem}.json"
                pd.read_csv(f).to_json(path, orient="split", index=False, date_format="iso")
                client.log_artifact(run_id, str(path), "tables")
                tables.append(f"tables/{path.name}")
                logged.append(tables[-1])
            folder = {".md": "tables", ".tex": "tables", ".png": "figures"}.get(f.suffix)
            if f.name == "README.md":
                folder = None
            elif folder is None:
                continue
            client.log_artifact(run_id, str(f), folder)
            logged.append(f"{folder}/{f.name}" if folder else f.name)
    known = json.loads(client.get_run(run_id).data.tags.get(LOGGED, "[]"))
    known += [{"path": t, "type": "table"} for t in tables if {"path": t, "type": "table"} not in known]
    client.set_tag(run_id, LOGGED, json.dumps(known))
    return logged


def fetch_published(client, run_id: str, out: Path) -> list[Path]:
    """The files ``publish`` logged on the run, back into ``out`` (CSV from the logged tables): the rebuild of a
    benchmark whose child runs are gone."""
    names = [a.path for a in client.list_artifacts(run_id)]
    if not any(n in ("tables", "figures") for n in names):
        return []
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in [n for n in names if n in ("tables", "figures")] + [n for n in names if n == "README.md"]:
            local = Path(client.download_artifacts(run_id, folder, tmp))
            for f in sorted(local.iterdir()) if local.is_dir() else [local]:
                if f.suffix == ".json":
                    with open(f) as fh:
                        split = json.load(fh)
                    df = pd.DataFrame(split["data"], columns=split["columns"])
                    files.append(out / f"{f.stem}.csv")
                    with atomic(files[-1]) as tmp_csv:
                        df.to_csv(tmp_csv, index=False)
                else:
                    files.append(out / f.name)
                    with atomic(files[-1]) as tmp_copy:
                        shutil.copyfile(f, tmp_copy)
    return files
