"""Spark Connect cases (`cases_*.py`), run in a pytest process of their own by
`tests/engines/spark/test_spark_connect.py`: a classic session and a local Connect session cannot
share a process (pyspark refuses `builder.remote("local")` beside a running SparkContext,
SESSION_ALREADY_EXIST, and which API `pyspark.sql.functions` builds is decided per process).

Here `spark` is a Spark Connect client session of a local Connect server, as a Databricks
serverless job or Databricks Connect has: only Spark Connect APIs (no SparkContext, RDD, cache,
py4j). The spark suite's fixtures (`make_engine`, `history`, `agent`) run on it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The client sets the builder's options on the session too, after the local server started
    # with them; the static ones (warehouse dir, bind addresses) it cannot set again, and says so.
    config.addinivalue_line("filterwarnings", "ignore:Failed to set spark:UserWarning")


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # pyspark's test mode for a local Connect server: an ephemeral gRPC port (two runs on one
    # machine do not collide) that the client reads from the server (SPARK-42272).
    os.environ.setdefault("SPARK_TESTING", "1")
    from pyspark.sql import SparkSession

    from agentbatch.engines.spark import session as spark_session

    warehouse: Path = tmp_path_factory.mktemp("connect-warehouse")
    builder = SparkSession.builder.remote("local[2]")
    for name, value in {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.warehouse.dir": str(warehouse),
    }.items():
        builder = builder.config(name, value)
    session = builder.getOrCreate()
    assert spark_session.is_connect(session), type(session)
    yield session
    session.stop()
