"""Runs of one job repeated on the spark target write the table as the local engine does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agentbatch
from agentbatch.testing.agent_server import AgentServer
from tests.engines.spark.histories import write_source


def test_a_merge_on_two_keys_keeps_the_table_column_order(make_engine: Any) -> None:
    """MERGE ... UPDATE SET * / INSERT * never reorders the target's columns (as Delta)."""
    engine = make_engine({"storage": "catalog"})
    name = f"default.order_{uuid.uuid4().hex[:8]}"
    engine.execute(f"CREATE TABLE {name} AS SELECT 1 AS id, 'a' AS v, 'x' AS fp")
    try:
        engine.execute(
            f"MERGE INTO {name} AS t USING (SELECT * FROM VALUES (1, 'b', 'y') AS s(id, v, fp)) "
            "AS s ON t.id = s.id AND t.fp = s.fp "
            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        table = engine.read_table(name)
        assert table.column_names == ["id", "v", "fp"]
        assert sorted(table.to_pylist(), key=str) == [
            {"id": 1, "v": "a", "fp": "x"},
            {"id": 1, "v": "b", "fp": "y"},
        ]
    finally:
        engine.execute(f"DROP TABLE IF EXISTS {name}")


def test_an_append_run_keeps_the_columns_where_the_first_run_put_them(
    agent: AgentServer, spark: Any, make_engine: Callable[..., Any], tmp_path: Path
) -> None:
    """README (Modes on a second run): `append` adds a row per key and request; the table's
    columns stay in the order the job wrote them, as on the local target."""
    make_engine()  # the suite's session is the active one: the runs use it
    source = write_source(tmp_path / "src.csv")
    table = f"default.app_{uuid.uuid4().hex[:8]}"

    def run(prefix: str, target: str) -> list[str]:
        job = tmp_path / f"app_{prefix}.yml"
        job.write_text(
            "name: app\nsource: {table: main.s.src, key: id, columns: [txt]}\n"
            f"request: \"concat('{prefix}: ', txt)\"\nagent: {{endpoint: apps/app}}\n"
            f"output: {{table: {table}, mode: append}}\n"
        )
        settings = {"warehouse_dir": str(tmp_path / target / "warehouse")}
        if target == "spark":
            settings["storage"] = "catalog"
        with agentbatch.run(
            job,
            target=target,
            tables={"main.s.src": source},
            endpoints={"apps/app": agent.url},
            state_dir=tmp_path / target / "state",
            project_dir=tmp_path,
            settings=settings,
            progress=False,
        ) as result:
            return list(result.to_arrow(whole_table=True).column_names)

    try:
        first = run("Q", "spark")
        assert run("Q", "local") == first
        assert run("Q2", "spark") == first
        assert run("Q2", "local") == first
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")
