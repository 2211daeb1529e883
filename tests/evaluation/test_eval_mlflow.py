"""MLflow logging, against a local file-store tracking URI in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from agentbatch.errors import ConfigError
from agentbatch.evaluation.report.mlflow_log import log_to_mlflow
from agentbatch.evaluation.results import CompareResult
from tests.evaluation.test_eval_aggregates import compare_scores, eval_result, scored


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 otherwise refuses file stores
    return uri


def test_an_evaluation_is_logged_with_its_report(tracking: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    result = eval_result(
        scored([1.0, 0.0, 1.0, 1.0], [10.0, 50.0, 30.0, 30.0], [5.0, 1.0, 4.0, 3.0])
    )
    run_id = log_to_mlflow(result, experiment="agentbatch-eval-test")
    assert run_id is not None
    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(run_id)
    assert run.data.metrics["exact"] == pytest.approx(0.75)
    assert run.data.metrics["latency"] == pytest.approx(30.0)
    assert "exact_ci_low" in run.data.metrics
    assert run.data.params["job"] == "j" and run.data.params["scores_table"] == "main.s.o_scores"
    assert run.data.tags["agentbatch.kind"] == "evaluation"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "agentbatch-eval-test"
    artifacts = {a.path for a in client.list_artifacts(run_id, "report")}
    assert artifacts == {"report/report.md", "report/report.html", "report/metrics.json"}


def test_a_comparison_is_logged(tracking: str) -> None:
    from mlflow.tracking import MlflowClient

    a = eval_result(scored([1.0, 0.0], [10.0, 20.0], [5.0, 1.0]), "a")
    b = eval_result(scored([1.0, 1.0], [20.0, 20.0], [5.0, 5.0]), "b")
    result = CompareResult(a, b, compare_scores(a.scored, b.scored), "main.s.o_comparison")
    run_id = log_to_mlflow(result, mode=True)
    assert run_id is not None
    metrics = MlflowClient(tracking_uri=tracking).get_run(run_id).data.metrics
    assert metrics["a/exact"] == 0.5 and metrics["b/exact"] == 1.0
    assert metrics["compare/exact/wins_b"] == 1.0 and metrics["compare/judge/delta"] == 2.0


def test_a_logging_failure_never_loses_the_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", blocker.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = eval_result(scored([1.0], [1.0], [1.0]))
    assert log_to_mlflow(result) is None  # warned, not raised
    with pytest.raises(ConfigError, match="MLflow logging failed"):
        log_to_mlflow(result, mode=True)


def test_no_tracking_uri_means_no_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if mlflow.tracking.is_tracking_uri_set():
        pytest.skip("a tracking URI is set in this process")
    result = eval_result(scored([1.0], [1.0], [1.0]))
    assert log_to_mlflow(result) is None
    assert log_to_mlflow(result, mode=False) is None
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        log_to_mlflow(result, mode=True)
