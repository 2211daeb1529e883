"""An exclusive OS lock on a file, held while a process works, saying who holds it.

The lock is `flock` on the open file: the OS releases it when the file is closed or the process
ends, killed or not, so a lock file left behind is inert. The file's text names the holder (pid,
what it is doing, since when) for the message another process shows when it is refused. Not POSIX:
no lock (there is no cross-process guard to take).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO


class LockHeld(Exception):
    """Another process holds the lock; `holder` is what it wrote about itself."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def take(path: Path, doing: str | None = None) -> IO[bytes] | None:
    """Lock `path` for this process and write who holds it, or raise LockHeld. The returned file
    must stay open for as long as the lock is wanted."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+b")  # noqa: SIM115 - held open by the caller
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_of(handle)
        handle.close()
        raise LockHeld(holder) from None
    # Written only once the lock is ours.
    handle.truncate(0)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    parts = [f"pid {os.getpid()}", *([doing] if doing else []), f"since {started}"]
    handle.write(", ".join(parts).encode())
    handle.flush()
    return handle


def _holder_of(handle: IO[bytes]) -> str:
    handle.seek(0)
    text = handle.read(500).decode("utf-8", errors="replace").strip()
    # Empty when the holder has just taken the lock and not yet said who it is.
    return text.splitlines()[0] if text else "holder unknown"
