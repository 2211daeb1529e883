"""agentbatch's spark target on a Spark Connect session, as a serverless job runs it: the REST
fallback on the driver against the loopback agent, answers written to a parquet table of the
session catalog."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.engines.spark import arrow, session
from agentbatch.engines.spark.engine import SparkEngine, fallback_place
from agentbatch.engines.spark.spill import MARK
from agentbatch.evaluation import evaluate
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.fake_workspace import serve_workspace
from agentbatch.testing.tokens import TokenAuthority
from tests.engines.spark.histories import KEYS, History
from tests.engines.spark.test_spark_run import push_down_job
from tests.engines.spark.test_spark_serverless_job import (
    CLIENT_ID,
    CLIENT_SECRET,
    PAT,
    ROWS,
    project,
    task_argv,
)
from tests.engines.spark.test_spark_session_lookup import in_thread
from tests.support.databricks_env import isolated_env
from tests.support.eval_servers import ROOT, TICKETS_CSV

SERVERLESS = {"serverless": True, "rest_fallback_on": "driver"}


def test_runs_rerun_merge_and_overwrite_on_the_driver(
    history: History, no_route: Callable[[int], Path]
) -> None:
    attempts = no_route(int(history.agent.url.rsplit(":", 1)[1].split("/")[0]))
    first = history.run("a", settings=SERVERLESS)
    assert (first["ok"], first["errors"], first["calls"]) == (len(KEYS) - 1, 1, len(KEYS))
    history.answering("a")
    assert history.run("a", settings=SERVERLESS)["calls"] == 0  # nothing is paid again
    history.answering("a")
    changed = history.run("b", settings=SERVERLESS)  # another prompt: every key again
    assert changed["calls"] == len(KEYS)
    history.answering("b")
    replaced = history.run("c", mode="overwrite", settings=SERVERLESS)
    assert replaced["calls"] == len(KEYS)
    history.answering("c")
    assert history.run("c", mode="overwrite", settings=SERVERLESS)["calls"] == 0
    history.answering("c")
    assert not attempts.exists()  # no agent call left an executor


def test_a_new_disk_reuses_the_answers_copied_over_connect(history: History) -> None:
    """A run on the driver copies its answers to `checkpoint_dir` and folds them there over
    Connect; the next task (another state folder: its ledger empty) pays for none of them."""
    settings = {**SERVERLESS, "checkpoint_dir": str(history.tmp_path / "volume")}
    assert history.run("a", settings=settings)["calls"] == len(KEYS)
    answered = history.rows()
    shutil.rmtree(history.tmp_path / "state")
    history.drop()
    again = history.run("a", settings=settings)
    assert (again["reused"], again["calls"]) == (len(KEYS), 0)
    assert history.rows() == answered


def test_the_executors_cannot_reach_a_refused_port(
    spark: Any, agent: AgentServer, no_route: Callable[[int], Path]
) -> None:
    """The control of `no_route`: a Python UDF of this server connecting to the agent fails."""
    host, port = agent.url.split("//", 1)[1].split("/")[0].rsplit(":", 1)
    attempts = no_route(int(port))

    def reach(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import socket

        for batch in batches:
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
                outcome = "connected"
            except OSError as err:
                outcome = f"refused: {err}"
            yield pa.record_batch([pa.array([outcome] * batch.num_rows)], names=["outcome"])

    (row,) = spark.range(1).mapInArrow(reach, "outcome string").collect()
    assert row["outcome"].startswith("refused:"), row
    assert attempts.read_text().strip()


def test_answers_cross_from_the_driver_as_on_a_remote_server(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serverless: the driver shares no disk with the executors; the answers go to Spark with
    `createDataFrame`, chunked through a spill table beside the output."""
    monkeypatch.setattr(session, "is_local", lambda spark: False)
    monkeypatch.setattr(arrow, "IN_MEMORY_ROWS", 3)
    first = history.run("a", settings=SERVERLESS)
    assert first["calls"] == len(KEYS)
    history.answering("a")
    assert history.run("a", settings=SERVERLESS)["calls"] == 0
    history.answering("a")
    spills = [t.name for t in history.spark.catalog.listTables("default") if MARK in t.name]
    assert spills == []


def test_a_connect_data_frame_as_the_source(
    agent: AgentServer, spark: Any, tmp_path: Path, make_engine: Any
) -> None:
    make_engine()
    source = spark.createDataFrame([(i, f"t{i}") for i in range(1, 5)], "id INT, txt STRING")
    job = tmp_path / "df.yml"
    job.write_text(
        "name: df\nsource: {table: main.s.src, key: id, columns: [txt]}\n"
        "request: \"concat('d: ', txt)\"\nagent: {endpoint: apps/df}\n"
        "output: {table: main.s.out, mode: merge}\n"
    )
    out = tmp_path / "out.parquet"
    with agentbatch.run(
        job,
        target="spark",
        tables={"main.s.src": source, "main.s.out": out},
        endpoints={"apps/df": agent.url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        settings={"warehouse_dir": str(tmp_path / "wh"), **SERVERLESS},
        progress=False,
    ) as result:
        assert result.summary["ok"] == 4
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["response"] for r in rows) == [f"answer: d: t{i}" for i in range(1, 5)]


def test_the_fallback_on_the_executors_over_connect(history: History) -> None:
    """Databricks Connect to a classic cluster (`auto` puts the fallback on its executors there),
    or `rest_fallback_on: executors`: sizing the shared agent budget read
    `spark.sparkContext.defaultParallelism`, which a Connect session refuses
    (JVM_ATTRIBUTE_NOT_SUPPORTED), and the run failed before any call."""
    first = history.run("a", settings={"rest_fallback_on": "executors"})
    assert first["calls"] == len(KEYS)
    history.answering("a")
    assert history.run("a", settings={"rest_fallback_on": "executors"})["calls"] == 0


def test_estimate_then_run(history: History) -> None:
    job = history.tmp_path / "jobs" / "ckpt_a.yml"
    history.run("a", settings=SERVERLESS, dry_run=True)
    found = agentbatch.estimate(
        job,
        target="spark",
        sample=3,
        seed=1,
        tables={"main.s.src": history.source},
        endpoints={"apps/ckpt": history.agent.url},
        state_dir=history.tmp_path / "state",
        project_dir=history.tmp_path,
        settings={
            "warehouse_dir": str(history.tmp_path / "warehouse"),
            "storage": "catalog",
            **SERVERLESS,
        },
        progress=False,
    )
    assert (found.to_send, found.sampled) == (len(KEYS), 3)
    rest = history.run("a", settings=SERVERLESS)
    assert rest["calls"] == len(KEYS) - 3
    history.answering("a")


def test_push_down(agent: AgentServer, tmp_path: Path, make_engine: Any) -> None:
    make_engine()
    job, options = push_down_job(tmp_path, agent, 6)
    with agentbatch.run(job, **options) as result:
        assert result.summary["strategy"] == "push-down"
        assert result.summary["rows"] == 6
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sorted(r["id"] for r in rows) == list(range(1, 7))
    assert all(r["response"].startswith("answer: Q: ") for r in rows)


def test_evaluation(agent: AgentServer, tmp_path: Path, make_engine: Any) -> None:
    make_engine()
    root = tmp_path / "project"
    (root / "jobs").mkdir(parents=True)
    shutil.copy(ROOT / "jobs" / "eval_triage.yml", root / "jobs")
    warehouse = tmp_path / "wh"
    result = evaluate(
        root / "jobs" / "eval_triage.yml",
        "spark",
        tables={"main.support.tickets": str(TICKETS_CSV)},
        endpoints={"apps/triage-agent": agent.url},
        settings={"warehouse_dir": str(warehouse), "storage": "files", **SERVERLESS},
        progress=False,
    )
    assert result.scores.num_rows == 300
    assert result.metric("label_exact_match")["mean"] > 0.8


def test_the_connect_session_is_found_from_any_thread_and_not_stopped(
    spark: Any, tmp_path: Path
) -> None:
    def use_and_close() -> tuple[bool, str]:
        engine = SparkEngine({"warehouse_dir": str(tmp_path / "w"), "storage": "files"})
        found = engine.spark is spark
        place = fallback_place("auto", engine.spark, {})
        engine.close()
        return found, place

    assert in_thread(use_and_close) == (True, "driver")  # Connect off Databricks: the driver
    assert spark.range(3).count() == 3  # still running


def test_the_serverless_job_in_a_process_whose_only_session_is_a_connect_client(
    tmp_path: Path, spark: Any, no_route: Callable[[int], Path]
) -> None:
    """The scheduled job's wheel entry point, as serverless runs it: a Python process with no JVM
    of its own, a Spark Connect client of the compute (`SPARK_REMOTE`, pyspark's switch to Spark
    Connect), whose executors cannot reach the agent. The engine built its session with a
    master beside SPARK_REMOTE, which pyspark refuses (CANNOT_CONFIGURE_SPARK_CONNECT_MASTER)."""
    from pyspark.sql.connect.client import DefaultChannelBuilder

    server = DefaultChannelBuilder.default_port()  # this server's port (pyspark's test mode)
    authority = TokenAuthority(clients={CLIENT_ID: CLIENT_SECRET}, pats={PAT: "job-owner"})
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage-agent": agent.url}, authority=authority) as ws,
    ):
        ws.put_secret("agentbatch", "client-id", CLIENT_ID)
        ws.put_secret("agentbatch", "client-secret", CLIENT_SECRET)
        port = int(agent.url.rsplit(":", 1)[1].split("/")[0])
        attempts = no_route(port)
        argv = task_argv(project(tmp_path, port), tmp_path, "auto")
        env = isolated_env(
            tmp_path,
            host=ws.url,
            token=PAT,
            PYSPARK_PYTHON=sys.executable,
            SPARK_REMOTE=f"sc://localhost:{server}",
        )
        for name in ("SPARK_LOCAL_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_TESTING"):
            env.pop(name, None)  # this process's own Connect state
        code = "from agentbatch.cli.entrypoint import main; main()"
        result = subprocess.run(
            [sys.executable, "-c", code, *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        requests = agent.stats().requests_total
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)["summary"]
    assert (summary["ok"], summary["errors"], summary["table_ok"]) == (ROWS, 0, ROWS)
    assert requests == ROWS
    assert not attempts.exists()  # no agent call left an executor
    assert CLIENT_SECRET not in result.stdout + result.stderr
