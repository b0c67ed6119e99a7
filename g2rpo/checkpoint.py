"""Model weights on disk: safetensors only (no pickles), loaded strictly, with one-line errors.

A trained policy is saved as ``NAME.safetensors`` (its state dict) beside ``NAME.json`` (tier, in-domain rewards,
method, seed, rounds, and the settings that shape the model: timestep convention, precision, LoRA), so an evaluation
knows what the checkpoint was trained on and rebuilds the model as it was trained.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import one_line
from .files import atomic, write_text


class CheckpointError(ValueError):
    """A model file that cannot be used: missing, truncated, corrupt or of another architecture."""


def read_state(path: Path, origin: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; CheckpointError naming the file and ``origin`` (where it comes from)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {origin}")
    try:
        return load_file(str(path))
    except Exception as e:  # truncated, or not a safetensors file
        raise CheckpointError(f"{path} is unreadable ({one_line(e)}); {origin}") from None


def check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, origin: str) -> None:
    """CheckpointError with a one-line summary unless ``state`` has exactly the module's keys and shapes. Works on a
    module built on the meta device, so a wrong file is refused before a large model is materialised."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shape = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or shape:
        raise CheckpointError(f"{path} does not match the model's architecture: {len(missing)} missing, {len(unexpected)} "
                              f"unexpected, {len(shape)} wrong-shape tensors (first: {(missing or unexpected or shape)[0]}); "
                              f"{origin}")


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, origin: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a one-line summary of any mismatch."""
    check_state(module, state, path, origin)
    module.load_state_dict(state, strict=True)


def save_policy(policy: torch.nn.Module, path: Path, meta: dict, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Weights (safetensors) and their metadata (JSON beside them), each written atomically. ``state`` replaces
    ``policy.state_dict()`` (e.g. the full weights gathered from FSDP shards)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = policy.state_dict() if state is None else state
    with atomic(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp))
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str) + "\n")
    return path


def read_meta(path: Path) -> dict:
    side = Path(path).with_suffix(".json")
    try:
        return json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{side} (the metadata beside {Path(path).name}) is missing or unreadable: "
                              f"{type(e).__name__}; checkpoints are written by python -m benchmarks.run") from None
