"""The session the process already has is found from any thread and never stopped by us.

`SparkSession.getActiveSession()` is thread-local (Spark Connect: pyspark `sql/connect/session.py`;
classic pyspark in pinned-thread mode too): in a thread that did not make the session it is None,
which once made the engine build a session of its own, "own" the existing one and stop it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from agentbatch.engines.spark.engine import SparkEngine, describe_fallback_place, fallback_place


def in_thread(fn: Any) -> Any:
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_session_not_active_in_this_thread_is_found_and_not_stopped(
    spark: SparkSession, tmp_path: Path
) -> None:
    assert in_thread(SparkSession.getActiveSession) is None  # the trap

    def use_and_close() -> bool:
        engine = SparkEngine({"warehouse_dir": str(tmp_path / "w"), "storage": "files"})
        found = engine.spark is spark
        engine.close()
        return found

    assert in_thread(use_and_close)
    assert spark.range(3).count() == 3  # still running


def test_fallback_place(spark: SparkSession) -> None:
    assert fallback_place("auto", spark, {}) == "executors"  # local Spark: executors reach out
    assert fallback_place("auto", spark, {"serverless": True}) == "driver"
    assert fallback_place("driver", spark, {}) == "driver"
    assert fallback_place("executors", spark, {"serverless": True}) == "executors"
    assert "auto" in describe_fallback_place({})
    assert "on the driver" in describe_fallback_place({"rest_fallback_on": "driver"})


def test_plan_shows_where_the_fallback_runs() -> None:
    from agentbatch.planning.explain import explain
    from agentbatch.execution.runner import plan
    from agentbatch.planning.targets import Target

    root = Path(__file__).resolve().parents[3]
    target = Target("serverless", "spark", {"rest_fallback_on": "driver"})
    text = explain(plan(root / "jobs" / "ticket_triage.yml", target, project_dir=root))
    assert "on the driver (rest_fallback_on: driver)" in text
    auto = explain(plan(root / "jobs" / "ticket_triage.yml", "spark", project_dir=root))
    assert "rest_fallback_on: auto" in auto
