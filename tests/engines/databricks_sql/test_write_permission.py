"""A table the user may read but not write (Unity Catalog's MODIFY missing): the REST fallback
stops before its first call, instead of paying for every answer and then being refused the
write. The loopback warehouse refuses a write of such a table as Unity Catalog does."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import agentbatch
from agentbatch.errors import ConfigError
from agentbatch.testing.agent_server import AgentServer
from tests.engines.databricks_sql import test_databricks_sql_run as runs
from tests.engines.databricks_sql.test_databricks_sql_run import (
    TICKETS_CSV,
    TOKEN,
    load_tickets,
    target_settings,
)
from tests.support.triage import OPEN_TICKETS, TRIAGE
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse
from tests.support.warehouse.service import WarehouseSettings

OUTPUT = "main.support.ticket_triage"


# The demo agent, no ambient Databricks credentials.
agent = runs.agent
isolated_auth = runs.isolated_auth


@pytest.fixture
def grants() -> WarehouseSettings:
    return WarehouseSettings()


@pytest.fixture
def warehouse(tmp_path: Path, grants: WarehouseSettings) -> Iterator[Warehouse]:
    volumes = tmp_path / "volumes"
    raw = volumes / "main" / "support" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(TICKETS_CSV, raw / "support_tickets.csv")
    with (
        DuckDBExecutor(volumes_dir=volumes) as executor,
        serve_warehouse(executor, token=TOKEN, volumes_dir=volumes, settings=grants) as wh,
    ):
        load_tickets(wh)
        yield wh


def triage(wh: Warehouse, agent: AgentServer, tmp_path: Path, team: str, **more: Any) -> Any:
    go = agentbatch.estimate if "sample" in more else agentbatch.run
    result = go(
        TRIAGE,
        target="databricks-sql",
        settings=target_settings(wh),
        endpoints={"apps/triage-agent": agent.url},
        vars={"team": team},
        project_dir=tmp_path,
        state_dir=tmp_path / "state",
        progress=False,
        **more,
    )
    if result.engine is not None:
        result.engine.close()
    return result


def table(wh: Warehouse) -> pa.Table:
    import databricks.sql

    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT ticket_id, request_fingerprint FROM {OUTPUT} ORDER BY ticket_id")
        return cur.fetchall_arrow()


def test_without_modify_the_run_stops_before_its_first_call(
    tmp_path: Path, agent: AgentServer, warehouse: Warehouse, grants: WarehouseSettings
) -> None:
    triage(warehouse, agent, tmp_path, "support")
    assert agent.stats().requests_total == OPEN_TICKETS
    before = table(warehouse)

    grants.no_modify.add(OUTPUT)  # the table's owner revokes MODIFY
    with pytest.raises(ConfigError) as refused:
        triage(warehouse, agent, tmp_path, "billing")  # a new request: every row to answer
    message = str(refused.value)
    assert f"cannot write the output table {OUTPUT}" in message
    assert "does not have MODIFY on Table" in message and "nothing was sent" in message
    assert agent.stats().requests_total == OPEN_TICKETS  # was: every row paid, then refused
    # An estimate writes its sample's answers (for the run to reuse): refused alike.
    with pytest.raises(ConfigError, match="does not have MODIFY on Table"):
        triage(warehouse, agent, tmp_path, "billing", sample=3)
    assert agent.stats().requests_total == OPEN_TICKETS
    assert table(warehouse).equals(before)

    grants.no_modify.discard(OUTPUT)
    done = triage(warehouse, agent, tmp_path, "billing")
    assert done.summary["table_rows"] == OPEN_TICKETS
    assert agent.stats().requests_total == 2 * OPEN_TICKETS
    assert not table(warehouse).equals(before)


def test_the_probe_commits_nothing_that_others_conflict_with(
    warehouse: Warehouse, grants: WarehouseSettings
) -> None:
    """The probe, a DELETE matching nothing, commits no version (Delta records no empty
    commit), so no writer that started before it can conflict with it; without MODIFY it is
    refused, while reading stays allowed."""
    import databricks.sql

    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.support.t AS SELECT 1 AS id")
        version = warehouse.service.commits.version("main.support.t")
        cur.execute("DELETE FROM main.support.t WHERE false")
        assert warehouse.service.commits.version("main.support.t") == version
        grants.no_modify.add("main.support.t")
        with pytest.raises(databricks.sql.exc.ServerOperationError, match="INSUFFICIENT_PERM"):
            cur.execute("DELETE FROM main.support.t WHERE false")
        cur.execute("SELECT count(*) FROM main.support.t")  # reading is still allowed
        assert cur.fetchone()[0] == 1
