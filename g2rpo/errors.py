"""One-line errors: bad input is reported in one line that names the file and what is wrong."""
from __future__ import annotations


def one_line(e: BaseException, limit: int = 160) -> str:
    """``'Type: first line of the message'`` (just ``'Type'`` for an empty message), for an error that wraps another."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:limit]}" if lines else type(e).__name__


def os_error(e: OSError) -> str:
    """``'reason: file'`` of an OSError (a full disk, a folder gone), for a one-line message about a failed write."""
    return f"{e.strerror or e}: {e.filename or ''}"
