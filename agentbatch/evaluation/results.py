"""The results of `evaluate` and `compare`, in a leaf module: the report writers read them
without importing the evaluation facade."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.evaluation.comparison import Comparison
    from agentbatch.evaluation.scoring import Scored
    from agentbatch.spec.models import Job


@dataclass(frozen=True)
class Coverage:
    """How the keys of the current selection stand in the output table: only a key's answer to
    the current request is scored, never an answer to another one (an edited prompt, other
    parameters, another agent mapped with `--endpoint`)."""

    selected: int  # keys of the current selection
    scored: int  # with an answer to the current request
    other_request: int  # holding answers to another request only

    @property
    def not_scored(self) -> int:
        return max(self.selected - self.scored, 0)

    @property
    def unanswered(self) -> int:
        """Keys the output holds no row for (a run stopped or limited, or not run yet)."""
        return max(self.not_scored - self.other_request, 0)

    def as_dict(self) -> dict[str, int]:
        return {
            "selected": self.selected,
            "scored": self.scored,
            "not_scored": self.not_scored,
            "other_request": self.other_request,
            "unanswered": self.unanswered,
        }


@dataclass
class EvalResult:
    """One scored variant: its scores and metrics (Arrow), and where they were written."""

    job: Job
    variant: str
    endpoint: str
    scored: Scored
    metrics: pa.Table
    answers_table: str
    scores_table: str
    metrics_table: str
    judge_tables: dict[str, str] = field(default_factory=dict)
    run_summary: dict[str, Any] | None = None
    coverage: Coverage | None = None
    answers_kept: bool = True  # False: the run kept no output table (a source with no rows)
    target: str = "local"
    evaluated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    report_files: list[Path] = field(default_factory=list)
    mlflow_run_id: str | None = None

    @property
    def scores(self) -> pa.Table:
        return self.scored.table

    def metric(
        self, scorer: str, group: str | None = None, *, null_group: bool = False
    ) -> dict[str, Any]:
        """The metrics row of one scorer: overall, for one group value (its text), or with
        `null_group=True` for the rows whose group column is NULL."""
        for row in self.metrics.to_pylist():
            if row["scorer"] != scorer:
                continue
            if null_group:
                found = row["group_by"] is not None and row["group_value"] is None
            elif group is not None:
                found = row["group_by"] is not None and row["group_value"] == group
            else:
                found = row["group_by"] is None
            if found:
                return dict(row)
        which = " and the NULL group" if null_group else (f" and group {group!r}" if group else "")
        raise KeyError(f"no metric for scorer {scorer!r}{which}")


@dataclass
class CompareResult:
    a: EvalResult
    b: EvalResult
    comparison: Comparison
    comparison_table: str
    report_files: list[Path] = field(default_factory=list)
    mlflow_run_id: str | None = None
