"""Parsing the project's own Python files in tests."""

from __future__ import annotations

import ast
import gc
from pathlib import Path


def parse_file(path: Path) -> ast.Module:
    """`ast.parse` of a file, with the garbage collector paused while it builds the tree.

    On CPython 3.11 a collection during the build can run a finaliser that formats a traceback
    (asyncio reporting a collected task does), which parses again and fails the outer parse with
    "SystemError: AST constructor recursion depth mismatch"."""
    source = path.read_text(encoding="utf-8")
    paused = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename=str(path))
    finally:
        if paused:
            gc.enable()
