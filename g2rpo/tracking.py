"""MLflow plumbing: open (or refuse) a store, parent and child runs, flattened params, provenance tags."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def default_uri(out: Path) -> str:
    """MLflow's own default backend (sqlite), placed inside the output folder."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def shown_uri(uri: str) -> str:
    """A sqlite URI under the working directory shown relative to it, so printed commands work in any clone."""
    prefix = f"sqlite:///{Path.cwd().resolve()}/"
    return "sqlite:///" + uri[len(prefix):] if uri.startswith(prefix) else uri


RACES = ("already exists", "database is locked", "UNIQUE constraint failed")
"""Errors two invocations creating one store at the same moment can see; opening is retried on them."""


def open_store(uri: str, experiment: str, artifact_root: Path | None, create: bool = True):
    """Connect and get (or, with ``create``, create) the experiment; raises RuntimeError with one line if the store
    cannot be used. Readers pass ``create=False`` so that a mistyped store or experiment is an error, not a new one."""
    if not create and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise RuntimeError(f"no MLflow store at {uri!r}")
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        return _open(mlflow, uri, experiment, artifact_root, create)


@contextlib.contextmanager
def store_lock(uri: str):
    """For a sqlite store, an exclusive lock beside the file while the store is created or migrated: two
    invocations doing it at once corrupt its schema (MLflow runs the migrations on first open)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    try:
        f = open(db.with_name(db.name + ".lock"), "w")
    except OSError:  # no such or no writable folder: let MLflow report the store itself
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _open(mlflow, uri, experiment, artifact_root, create):
    for attempt in range(4):
        try:
            client = mlflow.MlflowClient(uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None and not create:
                raise LookupError(f"no experiment {experiment!r}")
            if exp is None:
                loc = artifact_root.resolve().as_uri() if artifact_root is not None else None
                exp_id = client.create_experiment(experiment, artifact_location=loc, tags=EXPERIMENT_KIND)
            else:
                exp_id = exp.experiment_id
                if create and any(exp.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):  # made before the tag
                    for k, v in EXPERIMENT_KIND.items():
                        client.set_experiment_tag(exp_id, k, v)
            break
        except Exception as e:  # any backend failure: one line, no traceback
            msg = str(e).strip()
            if any(t in msg for t in RACES) and attempt < 3:  # another invocation is creating the same store
                time.sleep(0.2 * 2**attempt)
                continue
            if isinstance(e, LookupError):
                raise RuntimeError(f"{e.args[0]} in the MLflow store {uri!r}") from None
            first = msg.splitlines()[0] if msg else type(e).__name__
            if "database is locked" in first:  # sqlite waited its timeout on each of the attempts
                first += " (another process holds a write lock on it; run the command again when it is done)"
            raise RuntimeError(f"cannot open the MLflow store {uri!r}: {first}") from None
    return client, exp_id


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3 opens an experiment on its GenAI overview (traces, token usage) unless this tag calls it model training."""


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
