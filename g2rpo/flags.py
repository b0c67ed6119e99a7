"""Checks of command-line flags shared by every entry point: bad input is one line and exit code 2, found before any
model work (not after training, when the results are to be written)."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path


class FlagError(ValueError):
    """A flag that cannot be used; reported as one line with exit code 2."""


def at_least(*checks: tuple[str, int | None, int]) -> None:
    """FlagError for the first (flag, value, lowest) whose value (unless None: not given) is below its lowest."""
    for flag, value, low in checks:
        if value is not None and not value >= low:
            raise FlagError(f"{flag} must be >= {low}, got {value}")


def check_writable(path: Path, flag: str, file: bool = False) -> None:
    """FlagError unless ``path`` (with ``file``: a file to be written there, i.e. its folder) can be written, probed by
    creating the folder and a temporary file in it. Folders the probe made are removed again, so that a later
    rejection of the invocation leaves nothing behind; the command creates them when it writes."""
    path = Path(path)
    if file and path.is_dir():
        raise FlagError(f"{flag} {str(path)!r} is a folder; give a file path")
    folder = path.parent if file else path
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:  # mkdir of a folder that is a file says "File exists": name the file instead
        why = f"{e.filename} is a file" if isinstance(e, FileExistsError) else e.strerror or e
        raise FlagError(f"{flag} {str(path)!r} is not writable: {why}") from None
    finally:
        for p in made:
            with contextlib.suppress(OSError):  # another invocation may be writing there by now
                p.rmdir()
