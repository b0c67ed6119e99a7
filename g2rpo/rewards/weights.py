"""Reward checkpoints on disk: where each one is expected, safe loading, identities, and the bridge to PIL.

The official reward pipelines preprocess PIL images (bicubic resize, centre crop, normalise); rewards here take
tensors in [0, 1], quantise them to 8 bits like a saved PNG and run the official preprocessing on them, so a
score is the score the official code gives the saved image.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from ..checkpoint import CheckpointError
from ..errors import one_line
from ..files import sha256


class RewardCheckpointError(CheckpointError):
    """A reward model's weights are missing, unreadable or of another architecture."""


def is_hub_id(spec: str | Path) -> bool:
    """Whether ``spec`` reads as a hub repository id ('org/name') rather than a path; callers check paths first."""
    return str(spec).count("/") == 1 and not str(spec).startswith((".", "/", "~"))


def locate(spec: str | Path, expected: str, source: str, filename: str | None = None) -> Path:
    """The local file or folder ``spec``; or, when ``spec`` is a hub id ('org/name') and the network allows it, the
    downloaded file ``filename`` (or the whole repository). Errors name what is expected and where it comes from."""
    path = Path(spec).expanduser()
    if path.exists():
        if filename and path.is_dir():
            path = path / filename
            if not path.is_file():
                raise RewardCheckpointError(f"{path} is missing: expected {expected} ({source})")
        return path
    if is_hub_id(spec):
        try:
            import huggingface_hub as hub

            if filename:
                return Path(hub.hf_hub_download(str(spec), filename))
            return Path(hub.snapshot_download(str(spec)))
        except Exception as e:  # offline, unknown repo, gated
            raise RewardCheckpointError(f"{spec!r} is not a local path and the hub download failed "
                                        f"({type(e).__name__}); expected {expected} ({source})") from None
    shown = path / filename if filename and path.suffix != Path(filename).suffix else path
    raise RewardCheckpointError(f"{shown} is missing: expected {expected} ({source})")


def load_state(path: Path, source: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a pickled state dict loaded with ``weights_only=True`` (no code runs);
    ``key`` unwraps a nested dict such as HPS's {'state_dict': ...} when present."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = _torch_load(path)
    except Exception as e:  # truncated, not a checkpoint, or a pickle that needs code to load
        raise RewardCheckpointError(f"{path} is unreadable as a weights-only checkpoint ({one_line(e)}); "
                                    f"{source}") from None
    if key and isinstance(state, dict) and key in state:
        state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RewardCheckpointError(f"{path} holds no state dict of tensors; {source}")
    return state


def _torch_load(path: Path):
    """``weights_only`` always; memory-mapped (no second copy of GBs in RAM) unless the file predates torch's zip format."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "zip" not in str(e).lower():
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def identity(path: Path) -> str:
    """'NAME sha256:XXXXXXXXXXXXXXXX' of a weights file, recorded with every score it gives."""
    return f"{Path(path).name} sha256:{sha256(path)[:16]}"


def to_pil(images: torch.Tensor) -> list:
    """(B, 3, H, W) in [0, 1] as 8-bit RGB PIL images, rounded as ``eval.generate.save_png`` rounds them."""
    arr = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
