"""Saved expectations (golden SQL, conformance captures) and the switches that rewrite them.

A saved file is what a test compares against, so a missing one fails the test: writing it and
then comparing it with itself would pass whatever the code produces. Rewriting is a deliberate
local step behind an environment variable, and is refused under CI, where it would turn every
change into a pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.ci import under_ci


def update_requested(switch: str) -> bool:
    """Whether the environment variable `switch` asks to rewrite saved files (any value but
    empty or `0`); fails the calling test when it does so under CI."""
    if os.environ.get(switch, "") in ("", "0"):
        return False
    if under_ci():
        pytest.fail(f"{switch} is refused under CI: record saved files locally and commit them")
    return True


def expect_saved(
    path: Path,
    actual: str,
    *,
    switch: str,
    comparable: Callable[[str], object] = str,
    changed: str = "differs from the saved file",
) -> None:
    """`actual` must equal the saved `path` (both passed through `comparable`). With `switch`
    on, `path` is rewritten instead; without it, a missing `path` fails."""
    if update_requested(switch):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual.encode())
        return
    if not path.exists():
        pytest.fail(f"no saved file {path.name}: record it with {switch}=1 and commit it")
    saved = path.read_bytes().decode()
    assert comparable(saved) == comparable(actual), (
        f"{path.name}: {changed}; if intended, rerun with {switch}=1"
    )
