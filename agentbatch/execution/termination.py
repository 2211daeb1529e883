"""SIGTERM held while a run writes what it answered.

The command line turns SIGTERM into `Terminated` (cli/main.py): a run stops its calls and writes
what it answered before it exits. A SIGTERM that lands while a run that finished its calls is
writing them would interrupt that write, and on a warehouse cancel the statement, leaving every
answer out of the target until the next run (on compute whose disk is thrown away, paid again).
Inside `writing()` the signal is held instead: the write finishes, then `Terminated` is raised.
Schedulers send SIGKILL after a grace period: a write longer than it is still cut short, and the
target stays as it was (every write is one statement, or a swap a next run completes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from agentbatch.errors import Terminated

_writing = False
_held = False


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Around a run's write: a SIGTERM meanwhile (`hold`) is raised once the write succeeded. A
    write that fails raises its own error; the held signal goes with it (the run stops)."""
    global _writing, _held
    _writing, _held = True, False
    try:
        yield
    finally:
        _writing = False
    if _held:
        raise Terminated


def hold() -> bool:
    """For the SIGTERM handler: True while a run writes (the signal is then raised after the
    write, by `writing`), else False (the handler raises it now)."""
    global _held
    _held = _writing
    return _writing
