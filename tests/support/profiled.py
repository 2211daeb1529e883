"""The Python functions a piece of code calls, seen by a profile hook (it watches, changes
nothing): the hot path's per-row work is held to a number of calls, never to a time."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType
from typing import Any


class functions_called:
    """The names of the `chosen` Python functions called within the `with` block, one entry a
    call (this recorder's own entry and exit are not counted)."""

    def __init__(self, chosen: Callable[[CodeType], bool] = lambda code: True) -> None:
        self.chosen = chosen
        self.seen: list[str] = []

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        code = frame.f_code
        if event == "call" and code.co_filename != __file__ and self.chosen(code):
            self.seen.append(code.co_name)

    def __enter__(self) -> list[str]:
        sys.setprofile(self._hook)
        return self.seen

    def __exit__(self, *exc_info: object) -> None:
        sys.setprofile(None)
