"""agentbatch: run Databricks agents and models over whole tables.

The public API (`load_job`, `plan`, `render`, `run`, `estimate`, `read_table`, `evaluate`,
`compare`, and the types `Job`, `Plan`, `RunOptions`, `RunResult`) is imported on first use, so
`import agentbatch` stays light: no pandas, pyspark, duckdb or databricks.sql until a run needs
them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentbatch.agent.redact import install_log_masking
from agentbatch.version import __version__ as __version__

# Every log record of agentbatch's loggers is masked of secrets, wherever it goes (see there).
install_log_masking()

__all__ = [
    "Job",
    "Plan",
    "RunOptions",
    "RunResult",
    "compare",
    "estimate",
    "evaluate",
    "load_job",
    "plan",
    "read_table",
    "render",
    "run",
]

if TYPE_CHECKING:
    from agentbatch.api import (
        Job,
        Plan,
        RunOptions,
        RunResult,
        estimate,
        load_job,
        plan,
        read_table,
        render,
        run,
    )
    from agentbatch.evaluation import compare, evaluate


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agentbatch import api

        return getattr(api, name)
    raise AttributeError(f"module 'agentbatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Completion in notebooks lists the lazily imported API too.
    return sorted({*__all__, "__version__"})
