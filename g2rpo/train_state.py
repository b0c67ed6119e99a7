"""The training state on disk: the one format both entry points write (``python -m benchmarks.train --checkpoint
DIR`` and the benchmark runner's per-run checkpoints, through ``benchmarks.driver``), sharded under FSDP.

Each save is a torch.distributed.checkpoint folder ``DIR/round-NNNNNN`` (every rank writes its own shard of the
weights and optimizer states, keyed by parameter name, so a checkpoint also loads on another world size), and only
then does rank 0 point ``DIR/latest.json`` at it and remove the older folders: a crash mid-save leaves the previous
state in use. Randomness needs no state (every stream is keyed by seed, round and prompt), so weights, optimizer,
the round and optimizer-step counters, the weight average (Flow-GRPO's EMA, sharded as the weights) and a method's
own state (``Method.state_dict``) are everything that continuing exactly needs; a caller's ``counters`` (the
driver's cumulative NFE and training seconds) ride along. The folder's metadata is a pickle (DCP's format): a
training state is the run's own, for continuing it, never a file to exchange (policies travel as safetensors).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .distributed import DataParallel
from .errors import one_line
from .files import write_text

LATEST = "latest.json"


def _state(trainer, counters: dict[str, float]) -> dict:
    """``Trainer.state_dict`` (the state's one definition) and the caller's counters."""
    return trainer.state_dict() | {"extra": {k: torch.tensor(float(v), dtype=torch.float64) for k, v in counters.items()}}


@contextlib.contextmanager
def _quiet():
    """DCP warns on every single-process save and load that it assumes a single process: it does, on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _barrier(dp: DataParallel) -> None:
    if dp.world > 1:
        torch.distributed.barrier()


def save_train_state(trainer, folder: Path, dp: DataParallel | None = None, counters: dict[str, float] | None = None) -> Path:
    """Write the trainer's state after its last round (a collective: every rank calls it), with the caller's
    ``counters`` (numbers, returned by ``load_train_state``)."""
    import torch.distributed.checkpoint as dcp  # 0.7 s to import: only when a state is written
    from torch.distributed.checkpoint.api import CheckpointException

    dp = dp or DataParallel()
    folder = Path(folder)
    target = folder / f"round-{trainer.round_idx:06d}"
    if dp.main:
        shutil.rmtree(target, ignore_errors=True)  # a dead writer's partial folder of this round
    _barrier(dp)
    try:
        with _quiet():
            dcp.save(_state(trainer, counters or {}), checkpoint_id=str(target))
        _barrier(dp)
        if dp.main:
            write_text(folder / LATEST, json.dumps({"round": trainer.round_idx, "folder": target.name}) + "\n")
    except (OSError, CheckpointException) as e:  # a full disk, a folder gone: the previous state stays the latest
        if isinstance(e, CheckpointException):  # DCP wraps the writer's own error (and is a BaseException)
            e = next(iter(e.failures.values()))[0]
        raise CheckpointError(f"writing the training state to {target} failed ({one_line(e)}); the state of round "
                              f"{_latest_round(folder)} is kept") from None
        for old in folder.glob("round-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)
    _barrier(dp)
    return target


def _latest_round(folder: Path) -> str:
    """The round ``folder``'s pointer names, for messages ('none' before the first save)."""
    try:
        return str(json.loads((Path(folder) / LATEST).read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return "none"


def load_train_state(trainer, folder: Path, counters: dict[str, float] | None = None) -> dict[str, float] | None:
    """Continue ``trainer`` from the latest state under ``folder``: the saved ``counters`` (those named in
    ``counters``, with these as defaults), or None if there is no state yet. Build the trainer on the base model first
    (Flow-GRPO's KL reference is taken from the policy the trainer was built with)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, so named where caught

    counters = dict(counters or {})
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None
    origin = "it is written by python -m benchmarks.train --checkpoint"
    try:
        latest = json.loads(pointer.read_text())
        target = Path(folder) / latest["folder"]
        if not (target / ".metadata").is_file():
            raise CheckpointError(f"{target} is incomplete (no .metadata); {origin}")
        state = _state(trainer, counters)
        with _quiet():
            dcp.load(state, checkpoint_id=str(target))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, CheckpointException) as e:
        if isinstance(e, CheckpointError):
            raise
        if isinstance(e, CheckpointException):  # the first rank's own error says what is wrong
            e = next(iter(e.failures.values()))[0]
        raise CheckpointError(f"{pointer.parent} holds no usable training state ({one_line(e)}); "
                              f"{origin}") from None
    trainer.load_state_dict(state)
    return {k: float(state["extra"][k]) for k in counters}
