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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[4]
NO_ROUTE = """
import os, socket
_file = os.environ.get("AGENTBATCH_NO_ROUTE_FILE")
_log = os.environ.get("AGENTBATCH_NO_ROUTE_LOG")
_connect = socket.socket.connect

def _ports():
    try:
        with open(_file) as f:
            return {int(p) for p in f.read().split(",") if p.strip()}
    except (TypeError, OSError):
        return set()

def connect(self, address):
    if isinstance(address, tuple) and len(address) >= 2 and address[1] in _ports():
        if _log:
            with open(_log, "a") as f:
                f.write(f"{os.getpid()} {address[1]}\\n")
        raise OSError(101, "Network is unreachable (serverless UDF)")
    return _connect(self, address)

socket.socket.connect = connect
"""


def pytest_configure(config: pytest.Config) -> None:
    # The client sets the builder's options on the session too, after the local server started
    # with them; the static ones (warehouse dir, bind addresses) it cannot set again, and says so.
    config.addinivalue_line("filterwarnings", "ignore:Failed to set spark:UserWarning")


@pytest.fixture(scope="session")
def no_route_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The executors' `sitecustomize` (NO_ROUTE), the ports they refuse and their attempts."""
    folder = tmp_path_factory.mktemp("no-route")
    (folder / "sitecustomize.py").write_text(NO_ROUTE, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory, no_route_folder: Path) -> Iterator[Any]:
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
    # Serverless UDFs "cannot access the internet" (Databricks docs: compute/serverless/
    # limitations): the Python workers refuse connections to the ports `no_route` lists. Their
    # environment is the server's (`spark.executorEnv.*` does not reach the UDFs of a Connect
    # client), so the server starts with it, and this process keeps its own.
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(no_route_folder), str(ROOT), os.environ.get("PYTHONPATH")])
    )
    os.environ["AGENTBATCH_NO_ROUTE_FILE"] = str(no_route_folder / "ports")
    os.environ["AGENTBATCH_NO_ROUTE_LOG"] = str(no_route_folder / "attempts.log")
    try:
        session = builder.getOrCreate()
    finally:
        for name in ("PYTHONPATH", "AGENTBATCH_NO_ROUTE_FILE", "AGENTBATCH_NO_ROUTE_LOG"):
            if name in saved:
                os.environ[name] = saved[name]
            else:
                os.environ.pop(name, None)
    assert spark_session.is_connect(session), type(session)
    yield session
    session.stop()


@pytest.fixture
def no_route(no_route_folder: Path) -> Iterator[Callable[[int], Path]]:
    """`no_route(port)`: the executors refuse `port` until the test ends; returns the log of
    their attempts."""
    ports, attempts = no_route_folder / "ports", no_route_folder / "attempts.log"
    attempts.unlink(missing_ok=True)

    def block(port: int) -> Path:
        ports.write_text(str(port), encoding="utf-8")
        return attempts

    yield block
    ports.unlink(missing_ok=True)
