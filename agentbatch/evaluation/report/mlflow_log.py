"""Optional MLflow logging of an evaluation or a comparison: parameters, the overall metrics and
the report folder as artifacts.

Mode None logs only when mlflow is installed and a tracking URI is configured (MLFLOW_TRACKING_URI
or `mlflow.set_tracking_uri`), so nothing lands in a surprise local store; True requires both;
False never logs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.errors import ConfigError, MissingDependencyError
from agentbatch.evaluation.metrics import overall

if TYPE_CHECKING:
    from agentbatch.evaluation.results import CompareResult, EvalResult

log = logging.getLogger(__name__)
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-./ ]")


def log_to_mlflow(
    result: EvalResult | CompareResult, *, mode: bool | None = None, experiment: str | None = None
) -> str | None:
    """Log `result`; the MLflow run id, or None when not logging."""
    if mode is False:
        return None
    if mode is None and not os.environ.get("MLFLOW_TRACKING_URI") and "mlflow" not in sys.modules:
        return None  # no tracking URI can be set: skip importing mlflow (seconds)
    mlflow = _mlflow(required=mode is True)
    if mlflow is None:
        return None
    if not mlflow.tracking.is_tracking_uri_set():
        if mode is True:
            raise ConfigError("MLflow logging needs a tracking URI: set MLFLOW_TRACKING_URI")
        return None
    try:
        run_id = _log(mlflow, result, experiment)
    except Exception as err:  # mlflow raises many kinds; logging is never worth a lost evaluation
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if mode is True:
            raise ConfigError(f"MLflow logging failed: {message}") from None
        log.warning("MLflow logging failed (the tables and report are written): %s", message)
        return None
    log.info("logged to MLflow run %s", run_id)
    return run_id


def _log(mlflow: Any, result: EvalResult | CompareResult, experiment: str | None) -> str:
    experiment_id = None
    if experiment:
        # By id, not mlflow.set_experiment: that would change the process's active experiment.
        client = mlflow.tracking.MlflowClient()
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    params, metrics, name = _content(result)
    with mlflow.start_run(run_name=name, experiment_id=experiment_id) as run:
        mlflow.set_tag("agentbatch.kind", "comparison" if "comparison" in name else "evaluation")
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        files = result.report_files
        if files:
            for path in files:
                mlflow.log_artifact(str(path), artifact_path="report")
        else:
            _log_fresh_report(mlflow, result)
        run_id: str = run.info.run_id
    return run_id


def _mlflow(*, required: bool) -> Any:
    try:
        import mlflow
        import mlflow.tracking
    except ImportError:
        if required:
            raise MissingDependencyError("mlflow", "mlflow") from None
        return None
    return mlflow


def _content(result: EvalResult | CompareResult) -> tuple[dict[str, str], dict[str, float], str]:
    from agentbatch.evaluation.results import CompareResult

    if isinstance(result, CompareResult):
        params = {
            "job": result.a.job.name,
            "target": result.a.target,
            "endpoint_a": result.a.endpoint,
            "endpoint_b": result.b.endpoint,
            "paired_rows": str(result.comparison.paired_rows),
            "only_in_a": str(result.comparison.only_a),
            "only_in_b": str(result.comparison.only_b),
            "comparison_table": result.comparison_table,
        }
        metrics = {**_overall(result.a, "a/"), **_overall(result.b, "b/")}
        for row in result.comparison.summary.to_pylist():
            scorer = _clean(row["scorer"])
            # `paired`: the rows delta is over (both variants scored), fewer than a variant's
            # own rows behind `a/<scorer>`, `b/<scorer>` when either could not score some.
            for column in ("paired", "wins_a", "ties", "wins_b", "delta", "p_value"):
                if row[column] is not None:
                    metrics[f"compare/{scorer}/{column}"] = float(row[column])
        return (
            params,
            metrics,
            f"comparison {result.a.variant} vs {result.b.variant}: {result.a.job.name}",
        )
    params = {
        "job": result.job.name,
        "target": result.target,
        "endpoint": result.endpoint,
        "rows": str(result.scores.num_rows),
        "answers_table": result.answers_table,
        "scores_table": result.scores_table,
        "metrics_table": result.metrics_table,
    }
    return params, _overall(result, ""), f"evaluation: {result.job.name}"


def _overall(result: EvalResult, prefix: str) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for row in overall(result.metrics):
        if row["mean"] is None:
            continue
        scorer = _clean(row["scorer"])
        metrics[f"{prefix}{scorer}"] = float(row["mean"])
        for column in ("ci_low", "ci_high"):
            if row[column] is not None:
                metrics[f"{prefix}{scorer}_{column}"] = float(row[column])
    return metrics


def _log_fresh_report(mlflow: Any, result: EvalResult | CompareResult) -> None:
    from agentbatch.evaluation.report.files import write_compare_report, write_eval_report
    from agentbatch.evaluation.results import CompareResult

    with tempfile.TemporaryDirectory(prefix="agentbatch-report-") as folder:
        if isinstance(result, CompareResult):
            files = write_compare_report(result, Path(folder))
        else:
            files = write_eval_report(result, Path(folder))
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="report")


def _clean(name: str) -> str:
    return _METRIC_NAME.sub("_", name)
