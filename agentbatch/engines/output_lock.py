"""One writer per output: a run holds an exclusive lock on each output it writes, while it runs.

Two runs writing the same output (a mapped file, or a local warehouse file) would each read the
table, add their rows and save it: the last to save drops the rows the other paid for. So a run
locks `.<name>.lock` beside the output before it reads the table, and a run of another process
stops at once, naming the holder. Beside the output, because that is the one place every process
agrees on; not the output itself, because a save replaces the file (a lock on the old file would
guard nothing). The OS releases the lock when the process ends, killed or not: a lock file left
behind is inert.

The engines of one process share the lock: a Python session keeps a finished run's result (and
its engine) open while it runs the job again, and must not be refused by itself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO

from agentbatch import file_lock
from agentbatch.errors import EngineError

_held: dict[Path, tuple[IO[bytes] | None, int]] = {}  # lock file -> (open file, engines)
_guard = threading.Lock()


class OutputLock:
    """One engine's share of the lock on an output; `release` once it is closed."""

    def __init__(self, path: Path) -> None:
        self._path: Path | None = path

    def release(self) -> None:
        if self._path is None:
            return
        with _guard:
            handle, engines = _held.pop(self._path)
            if engines > 1:
                _held[self._path] = (handle, engines - 1)
            elif handle is not None:
                handle.close()  # releases the OS lock
        self._path = None


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


def hold(output: Path, holder: str) -> OutputLock:
    """Lock `output` for this process, or raise EngineError naming the run of another process
    that holds it. `holder` says who we are (job, run), for the message that run would show."""
    path = lock_path(output)
    with _guard:
        handle, engines = _held.get(path) or (_acquire(output, path, holder), 0)
        _held[path] = (handle, engines + 1)
    return OutputLock(path)


def _acquire(output: Path, path: Path, holder: str) -> IO[bytes] | None:
    try:
        return file_lock.take(path, holder)
    except file_lock.LockHeld as held:
        raise EngineError(
            f"local engine: {output} is being written by another run ({held.holder}); "
            "wait for it to finish, or map this run's output to another file"
        ) from None
