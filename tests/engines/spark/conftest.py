"""One local Spark session for the whole spark suite (it takes several seconds to start)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from agentbatch.engines.spark.engine import SparkEngine
from agentbatch.testing.agent_server import AgentServer, serve_agent
from tests.engines.spark.histories import History
from tests.support.warehouse.spark_parser import shared_session

HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # PySpark 4.3 warns on import that it does not fully support pandas 3; the engine moves data
    # as Arrow (mapInArrow, Arrow UDFs), not pandas.
    config.addinivalue_line(
        "filterwarnings", "ignore:PySpark does not yet fully support pandas:FutureWarning"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    # The process's one session, whichever suite starts it first (the loopback warehouse parses
    # every statement with it too): one builder, so the settings never depend on test order.
    session = shared_session()
    yield session
    session.stop()


@pytest.fixture
def make_engine(spark: SparkSession, tmp_path: Path) -> Iterator[object]:
    """`make_engine(settings=..., tables=..., output_tables=...)`: engines on the shared session."""
    engines: list[SparkEngine] = []

    def make(settings: dict[str, object] | None = None, **kwargs: object) -> SparkEngine:
        merged = {
            "warehouse_dir": str(tmp_path / "warehouse"),
            "state_dir": str(tmp_path / "state"),
            **(settings or {}),
        }
        engine = SparkEngine(merged, spark=spark, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    """The demo agent, fault-free (a module needing faults defines its own `agent`)."""
    with serve_agent() as server:
        yield server


@pytest.fixture
def history(
    agent: AgentServer, spark: Any, make_engine: Callable[..., Any], tmp_path: Path
) -> Iterator[History]:
    make_engine()  # the suite's session is the active one: the runs use it
    made = History(agent, spark, tmp_path)
    yield made
    spark.sql(f"DROP TABLE IF EXISTS {made.table}")
