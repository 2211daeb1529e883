"""Engine registry: names map to engine classes, imported only when chosen."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from agentbatch.errors import NotSupportedError, UsageError

ENGINES: dict[str, str] = {
    "local": "agentbatch.engines.local:LocalEngine",
    "databricks-sql": "agentbatch.engines.databricks_sql.engine:DatabricksSQLEngine",
    "spark": "agentbatch.engines.spark.engine:SparkEngine",
}


def engine_class(name: str) -> Any:
    """The engine class registered as `name`; a typo gets a suggestion."""
    try:
        path = ENGINES[name]
    except KeyError:
        close = difflib.get_close_matches(name, ENGINES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(
            f"unknown engine {name!r}{hint}; choose one of: {', '.join(ENGINES)}"
        ) from None
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise NotSupportedError(
            f"the {name} engine is not available in this version of agentbatch"
        ) from None
    return getattr(module, class_name)
