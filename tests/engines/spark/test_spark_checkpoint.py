"""The executors' checkpoint: whole files only, retried tasks skip finished rows, one row per key."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from agentbatch.engines.spark.checkpoints import COMPACTED, compact, latest_per_key, read_reusable
from agentbatch.engines.spark.distributed import CheckpointWriter, one_per_key, output_schema
from agentbatch.errors import AgentError
from agentbatch.results import result_arrow_fields
from agentbatch.testing.agent_server import serve_agent


def answers(keys: list[int], fingerprint: str = "fp") -> pa.Table:
    return pa.table({"k": keys, "request_fingerprint": [fingerprint] * len(keys)})


def test_a_retried_task_skips_rows_its_earlier_attempt_finished(tmp_path: Path) -> None:
    first = CheckpointWriter(tmp_path, "run1", partition=4, attempt=0)
    first.write(answers([1, 2]))
    CheckpointWriter(tmp_path, "run1", partition=5, attempt=0).write(answers([3]))  # another task
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-run1-p00004-a0-000000.parquet",
        "part-run1-p00005-a0-000000.parquet",
    ]
    retry = CheckpointWriter(tmp_path, "run1", partition=4, attempt=1)
    skip = retry.earlier_attempts("k")
    batch = pa.RecordBatch.from_pydict(
        {"k": [1, 2, 3, 4], "request_fingerprint": ["fp", "other", "fp", "fp"]}
    )
    assert skip(batch).column("k").to_pylist() == [2, 3, 4]  # key 2 was asked with another prompt
    assert CheckpointWriter(tmp_path, "run1", 4, attempt=0).earlier_attempts("k")(batch) is batch


def test_one_row_per_key_prefers_an_answer_then_the_newest(spark: SparkSession) -> None:
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    later = t0 + datetime.timedelta(minutes=1)
    rows = [
        (1, "old answer", None, t0),
        (1, None, "HTTP 500", later),  # a later failure does not replace an answer
        (2, None, "HTTP 500", t0),
        (2, "retried ok", None, later),
        (3, "a", None, t0),
        (3, "b", None, later),
    ]
    df = spark.createDataFrame(rows, "k int, response string, error string, answered_at timestamp")
    got = {r["k"]: r["response"] for r in one_per_key(df, "k").collect()}
    assert got == {1: "old answer", 2: "retried ok", 3: "b"}


def test_an_unusable_endpoint_inside_ai_query_is_an_agent_error(make_engine: Any) -> None:
    with serve_agent() as agent:
        engine = make_engine(
            {"ai_query_endpoints": {"ep": f"{agent.url}/serving-endpoints/x/nope"}}
        )
        with pytest.raises(AgentError, match="HTTP 404"):
            engine.fetch_one("SELECT ai_query('ep', 'hi', failOnError => false) AS a")


def test_the_latest_answer_per_key_wins_across_runs_as_in_the_ledger(spark: SparkSession) -> None:
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    later = t0 + datetime.timedelta(minutes=1)
    rows = [
        (1, "old answer", None, t0),
        (1, None, "[transient] HTTP 503", later),  # a refresh's failure hides the old answer
        (2, None, "[permanent] HTTP 400", t0),
        (2, "retried ok", None, later),
        (3, "a", None, t0),
    ]
    df = spark.createDataFrame(rows, "k int, response string, error string, answered_at timestamp")
    got = {r["k"]: (r["response"], r["error"]) for r in latest_per_key(df, "k").collect()}
    assert got == {1: (None, "[transient] HTTP 503"), 2: ("retried ok", None), 3: ("a", None)}


def answered(keys: pa.Array, response: str) -> pa.Table:
    """A task's checkpoint group: the key and every result column."""
    columns: dict[str, Any] = {"k": keys}
    for f in result_arrow_fields():
        columns[f.name] = pa.nulls(len(keys), f.type)
    columns["response"] = pa.array([response] * len(keys))
    columns["request_fingerprint"] = pa.array(["fp"] * len(keys))
    now = datetime.datetime.now(datetime.timezone.utc)
    columns["answered_at"] = pa.array([now] * len(keys), pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


def test_files_of_another_key_type_are_skipped_then_compacted_away(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The source's key was text, is a number now: one Spark read of both kinds of files fails.
    CheckpointWriter(tmp_path, "text", 0, 0).write(answered(pa.array(["1", "2"]), "old"))
    CheckpointWriter(tmp_path, "num", 0, 0).write(answered(pa.array([2, 3], pa.int64()), "new"))
    (text,) = tmp_path.glob("part-text-*")
    os.utime(text, (1, 1))  # written first
    (tmp_path / "part-torn-p00000-a0-000000.parquet").write_bytes(b"PAR1 torn")
    os.utime(tmp_path / "part-torn-p00000-a0-000000.parquet", (1, 1))  # of a run killed long ago
    rows = spark.createDataFrame([], "k bigint, request_fingerprint string").schema
    schema = output_schema(rows, None)

    with caplog.at_level("WARNING"):
        reusable = read_reusable(spark, tmp_path, "k", schema)
    assert reusable is not None
    assert sorted((r["k"], r["response"]) for r in reusable.collect()) == [(2, "new"), (3, "new")]
    assert "2 of 3 files" in caplog.text and str(tmp_path) in caplog.text

    compact(spark, tmp_path, "k", "num")  # the newest file's types are the latest run's
    (kept,) = (p.name for p in tmp_path.iterdir())
    assert kept.startswith(COMPACTED) and "removed 2 files" in caplog.text
    caplog.clear()
    again = read_reusable(spark, tmp_path, "k", schema)
    assert again is not None and sorted(r["k"] for r in again.collect()) == [2, 3]
    assert not caplog.text
