"""Spark failures as agentbatch errors.

A failed statement is an EngineError naming Spark's message; a Python exception raised inside a
UDF or task is named by its own last line (Spark wraps it in a long JVM trace); an agent found
unusable inside a registered `ai_query` is an AgentError; an operation the table format lacks is a
NotSupportedError with what to do instead. Anything not from Spark is re-raised as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from agentbatch.engines.base import error_line
from agentbatch.errors import AgentbatchError, AgentError, EngineError, NotSupportedError

T = TypeVar("T")

_PYTHON_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$")
_WRAPPERS = ("PythonException", "Py4JJavaError")


def guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except AgentbatchError:
        raise
    except Exception as err:
        raise translate(err) from None


def guarded(items: Iterator[T]) -> Iterator[T]:
    """`items`, with Spark failures raised while iterating translated (results are lazy)."""
    try:
        yield from items
    except AgentbatchError:
        raise
    except Exception as err:
        raise translate(err) from None


def translate(err: Exception) -> AgentbatchError:
    if not _from_spark(err):
        raise err
    text = str(err)
    lines = (line.strip() for line in text.splitlines())
    raised = [m for m in map(_PYTHON_ERROR.match, lines) if m and m.group(1) not in _WRAPPERS]
    if raised:
        name, message = raised[-1].group(1), raised[-1].group(2)
        if name == "AgentError":
            return AgentError(message)
        return EngineError(f"spark engine: {name}: {message}")
    if "UNSUPPORTED_FEATURE" in text:
        return NotSupportedError(
            f"spark engine: {error_line(err)} (write to Delta tables, or keep tables as parquet "
            "folders with the setting storage: files)"
        )
    return EngineError(f"spark engine: {error_line(err)}")


def _from_spark(err: Exception) -> bool:
    roots = {cls.__module__.split(".")[0] for cls in type(err).__mro__}
    return bool(roots & {"pyspark", "py4j"})
