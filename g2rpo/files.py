"""Files: atomic writes (a reader, or a run killed mid-write, sees the old file or the new one, never half of one)
and file identities."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic(path: Path):
    """Yields a temporary path beside ``path``; renamed onto it only if the block completes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes: the identity recorded with weights and scores (read in chunks: reward
    checkpoints are several GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale(folder: Path) -> list[Path]:
    """Delete temporaries left in ``folder`` by writers that were killed (their pid is gone)."""
    removed = []
    for tmp in Path(folder).glob(".*.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not alive(int(pid)):
            if tmp.is_dir():  # a killed writer's temporary folder (e.g. a half-written export)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped (a prompt file: one prompt per line). OSError and
    UnicodeDecodeError reach the caller, which words the one-line error for its flag."""
    return [ln.strip() for ln in Path(path).expanduser().read_text(encoding="utf-8").splitlines() if ln.strip()]
