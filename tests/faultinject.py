"""Run a command with one fault at one write, for the fault tests:
``python -m tests.faultinject FAULT@WHERE#K MODULE [ARGS...]``.

FAULT is ``kill`` (the process dies by SIGKILL mid-write, leaving what a kill -9 leaves on disk) or ``enospc`` (the write
fails as on a full disk). WHERE is ``state`` (the K-th training-state save of the process: its first file is half
written when the fault hits) or a file name such as ``latest.json`` or ``paired_vs_base.csv`` (the K-th atomic write
of a file of that name: its temporary is half written, the file itself not yet replaced). The command itself is
unchanged; only these two write paths are wrapped.
"""
from __future__ import annotations

import errno
import os
import re
import runpy
import signal
import sys


def hit(fault: str, stream=None) -> None:
    if fault == "kill":
        if stream is not None:
            stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def wrap_state(fault: str, k: int) -> None:
    import torch.distributed.checkpoint as dcp
    import torch.distributed.checkpoint.filesystem as fs

    real_save, real_item, seen = dcp.save, fs._write_item, {"saves": 0, "armed": False}

    def save(*args, **kw):
        seen["saves"] += 1
        seen["armed"] = seen["saves"] == k
        return real_save(*args, **kw)

    def write_item(transforms, stream, data, *rest, **kw):
        if seen["armed"]:
            seen["armed"] = False
            stream.write(b"\0" * 4096)  # a partial shard
            hit(fault, stream)
        return real_item(transforms, stream, data, *rest, **kw)

    dcp.save, fs._write_item = save, write_item


def wrap_file(fault: str, name: str, k: int) -> None:
    real_replace, seen = os.replace, {"n": 0}

    def replace(src, dst, *args, **kw):
        if os.path.basename(os.fspath(dst)) == name and os.path.basename(os.fspath(src)).endswith(".tmp"):
            seen["n"] += 1
            if seen["n"] == k:
                size = os.path.getsize(src)
                with open(src, "r+b") as f:
                    f.truncate(size // 2)  # the temporary as a writer stopped half-way leaves it
                if fault == "enospc":
                    os.unlink(src)  # what atomic's cleanup does after a failed write
                hit(fault)
        return real_replace(src, dst, *args, **kw)

    os.replace = replace


def main() -> None:
    spec, module, *args = sys.argv[1:]
    m = re.fullmatch(r"(kill|enospc)@([^#]+)#(\d+)", spec)
    if m is None:
        sys.exit(f"faultinject: expected FAULT@WHERE#K, got {spec!r}")
    fault, where, k = m.group(1), m.group(2), int(m.group(3))
    wrap_state(fault, k) if where == "state" else wrap_file(fault, where, k)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
