"""MLflow plumbing: open (or refuse) a store, parent and child runs, flattened params, provenance tags."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def default_uri(out: Path) -> str:
    """MLflow's own default backend (sqlite), placed inside the output folder."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def shown_uri(uri: str) -> str:
    """A sqlite URI under the working directory shown relative to it, so printed commands work in any clone."""
    prefix = f"sqlite:///{Path.cwd().resolve()}/"
    return "sqlite:///" + uri[len(prefix):] if uri.startswith(prefix) else uri


def open_store(uri: str, experiment: str, artifact_root: Path | None):
    """Connect and get or create the experiment; raises RuntimeError with one line if the store cannot be used."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            loc = artifact_root.resolve().as_uri() if artifact_root is not None else None
            exp_id = client.create_experiment(experiment, artifact_location=loc)
        else:
            exp_id = exp.experiment_id
    except Exception as e:  # any backend failure: one line, no traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"cannot open the MLflow store {uri!r}: {first}") from None
    return client, exp_id


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> 'a.b' keys with string values (MLflow params are write-once strings)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
        else:
            out[key] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(getattr(v, "value", v))
    return out


def git_commit() -> str:
    """HEAD of the checkout running the benchmark, '+dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
