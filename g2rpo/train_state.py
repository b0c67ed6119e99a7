"""The full training state on disk for ``python -m g2rpo.train --checkpoint DIR``, sharded under FSDP.

Each save is a torch.distributed.checkpoint folder ``DIR/round-NNNNNN`` (every rank writes its own shard of the
weights and optimizer states, keyed by parameter name, so a checkpoint also loads on another world size), and only
then does rank 0 point ``DIR/latest.json`` at it and remove the older folders: a crash mid-save leaves the previous
state in use. Randomness needs no state (every stream is keyed by seed, round and prompt), so weights, optimizer,
the round and optimizer-step counters and the weight average (Flow-GRPO's EMA, sharded as the weights) are
everything that continuing exactly needs.
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


def _state(trainer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optim = get_state_dict(trainer.policy, trainer.opt)
    state = {"model": model, "optim": optim, "counters": {"optimizer_steps": torch.tensor(trainer.optimizer_steps)}}
    return state | ({"ema": trainer.ema.state_dict()} if trainer.ema is not None else {})


@contextlib.contextmanager
def _quiet():
    """DCP warns on every single-process save and load that it assumes a single process: it does, on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _barrier(dp: DataParallel) -> None:
    if dp.world > 1:
        torch.distributed.barrier()


def save_train_state(trainer, folder: Path, dp: DataParallel) -> Path:
    """Write the trainer's state after its last round (a collective: every rank calls it)."""
    import torch.distributed.checkpoint as dcp

    folder = Path(folder)
    target = folder / f"round-{trainer.round_idx:06d}"
    if dp.main:
        shutil.rmtree(target, ignore_errors=True)  # a dead writer's partial folder of this round
    _barrier(dp)
    with _quiet():
        dcp.save(_state(trainer), checkpoint_id=str(target))
    _barrier(dp)
    if dp.main:
        write_text(folder / LATEST, json.dumps({"round": trainer.round_idx, "folder": target.name}) + "\n")
        for old in folder.glob("round-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)
    _barrier(dp)
    return target


def load_train_state(trainer, folder: Path) -> bool:
    """Continue ``trainer`` from the latest state under ``folder``; False if there is none yet. Build the trainer on
    the base model first (Flow-GRPO's KL reference is taken from the policy the trainer was built with)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, so named here
    from torch.distributed.checkpoint.state_dict import set_state_dict

    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return False
    origin = "it is written by python -m g2rpo.train --checkpoint"
    try:
        latest = json.loads(pointer.read_text())
        target = Path(folder) / latest["folder"]
        if not (target / ".metadata").is_file():
            raise CheckpointError(f"{target} is incomplete (no .metadata); {origin}")
        state = _state(trainer)
        with _quiet():
            dcp.load(state, checkpoint_id=str(target))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, CheckpointException) as e:
        if isinstance(e, CheckpointError):
            raise
        if isinstance(e, CheckpointException):  # the first rank's own error says what is wrong
            e = next(iter(e.failures.values()))[0]
        raise CheckpointError(f"{pointer.parent} holds no usable training state ({one_line(e)}); "
                              f"{origin}") from None
    set_state_dict(trainer.policy, trainer.opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    trainer.round_idx = int(latest["round"])
    trainer.optimizer_steps = int(state["counters"]["optimizer_steps"])  # the EMA shadows were loaded in place
    return True
