"""Bulk evaluation: score a job's answers, aggregate them with confidence intervals, compare two
agents or two runs on the same rows, and write a report people can read.

    from agentbatch.evaluation import evaluate, compare
    result = evaluate("jobs/eval_triage.yml", tables={...}, endpoints={...}, report_dir="out")
    result.metrics.to_pandas()

Names load lazily: `agentbatch.spec.evaluation` is imported by the job models and must stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Evaluation": "agentbatch.spec.evaluation",
    "EvalResult": "agentbatch.evaluation.results",
    "CompareResult": "agentbatch.evaluation.results",
    "evaluate": "agentbatch.evaluation.run",
    "compare": "agentbatch.evaluation.run",
    "score_table": "agentbatch.evaluation.scoring",
    "compute_metrics": "agentbatch.evaluation.metrics",
    "compare_scores": "agentbatch.evaluation.comparison",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentbatch.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
