"""The loopback fakes answer the workspace calls the product makes in the shapes databricks-sdk
parses, and refuse what Databricks refuses: warehouse types and app states outside the SDK's
enums, session settings Databricks SQL does not list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied
from databricks.sdk.service.apps import ApplicationState, ComputeState
from databricks.sdk.service.sql import GetWarehouseResponseWarehouseType, State

from agentbatch.engines.databricks_sql.engine import DatabricksSQLEngine
from agentbatch.testing.fake_workspace import FakeApp, serve_workspace
from tests.support.databricks_env import isolate
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse
from tests.support.warehouse.service import WarehouseSettings

TOKEN = "dapi-fake-apis-token"
# What the connector itself puts in every session (databricks-sql-connector
# `thrift_backend.open_session`) and every statement (`execute_command`).
TIMESTAMPS = "spark.thriftserver.arrowBasedRowSet.timestampAsString"


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[DuckDBExecutor]:
    with DuckDBExecutor(volumes_dir=tmp_path / "volumes") as executor:
        yield executor


def workspace(wh: Warehouse, token: str = TOKEN) -> WorkspaceClient:
    return WorkspaceClient(host=f"http://{wh.host}:{wh.port}", token=token)


@pytest.mark.parametrize(
    ("settings", "kind", "serverless"),
    [
        (WarehouseSettings(), GetWarehouseResponseWarehouseType.PRO, True),
        (
            WarehouseSettings(warehouse_type="CLASSIC", serverless=False),
            GetWarehouseResponseWarehouseType.CLASSIC,
            False,
        ),
    ],
)
def test_warehouses_get_is_parsed_by_the_sdk(
    executor: DuckDBExecutor,
    settings: WarehouseSettings,
    kind: GetWarehouseResponseWarehouseType,
    serverless: bool,
) -> None:
    with serve_warehouse(executor, token=TOKEN, settings=settings) as wh:
        info = workspace(wh).warehouses.get(wh.warehouse_id)
        assert (info.warehouse_type, info.enable_serverless_compute) == (kind, serverless)
        assert info.state == State.RUNNING
        with pytest.raises(NotFound):
            workspace(wh).warehouses.get("another")
        # A token the workspace does not accept: 403 "Invalid access token.", as elsewhere.
        with pytest.raises(PermissionDenied, match="Invalid access token"):
            workspace(wh, "dapi-unknown").warehouses.get(wh.warehouse_id)


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"warehouse_type": "SERVERLESS"}, "is no GetWarehouseResponseWarehouseType"),
        ({"warehouse_type": "classic", "serverless": False}, "is no"),
        ({"warehouse_type": "CLASSIC"}, "CLASSIC warehouse cannot be serverless"),
    ],
)
def test_a_warehouse_databricks_cannot_report_cannot_be_served(
    fields: dict[str, Any], refusal: str
) -> None:
    """A type the SDK does not know reads as None, which agentbatch takes for "ai_query runs":
    a test on such a warehouse would test nothing. Serverless compute needs PRO."""
    with pytest.raises(ValueError, match=refusal):
        WarehouseSettings(**fields)


def test_app_states_are_the_sdks_and_reach_it_parsed() -> None:
    with pytest.raises(ValueError, match="ComputeState"):
        FakeApp("triage", "http://127.0.0.1:9", compute_state="STOPED")
    with pytest.raises(ValueError, match="ApplicationState"):
        FakeApp("triage", "http://127.0.0.1:9", app_state="FAILED")
    # Every compute state, each beside an app state (there are fewer of those: cycled).
    app_states = list(ApplicationState)
    apps = [
        FakeApp(
            f"app-{i}",
            "http://127.0.0.1:9",
            compute_state=compute.value,
            app_state=app_states[i % len(app_states)].value,
        )
        for i, compute in enumerate(ComputeState)
    ]
    with serve_workspace(apps) as ws:
        client = WorkspaceClient(host=ws.url, token="dapi-demo")
        for app in apps:
            info = client.apps.get(app.name)
            assert info.compute_status is not None and info.app_status is not None
            assert info.compute_status.state == ComputeState(app.compute_state)
            assert info.app_status.state == ApplicationState(app.app_state)
            assert info.url == app.url


@pytest.mark.parametrize(
    "name",
    [
        "spark.sql.shuffle.partitions",
        "spark.databricks.io.cache.enabled",
        "READ_ONLY_EXTERNAL_METASTORE",  # settable globally only
        "use_cached_results",
    ],
)
def test_a_session_setting_databricks_sql_does_not_list_is_refused(
    executor: DuckDBExecutor, name: str
) -> None:
    """docs sql-ref-parameters: "Databricks SQL does not support setting Spark configurations
    that aren't listed"; OpenSession fails with "Configuration <name> is not available."."""
    with serve_warehouse(executor, token=TOKEN) as wh:
        kwargs = wh.connect_kwargs(session_configuration={name: "true"})
        with pytest.raises(databricks.sql.exc.Error, match=f"Configuration {name} is not"):
            databricks.sql.connect(**kwargs)
        assert wh.sessions == []


def test_the_listed_session_settings_are_accepted_in_any_case(executor: DuckDBExecutor) -> None:
    listed = {
        "ansi_mode": "true",
        "LEGACY_TIME_PARSER_POLICY": "CORRECTED",
        "max_file_partition_bytes": "64m",
        "STATEMENT_TIMEOUT": "3600",
        "TimeZone": "UTC",
        "USE_CACHED_RESULT": "false",
    }
    with serve_warehouse(executor, token=TOKEN) as wh:
        kwargs = wh.connect_kwargs(session_configuration=listed, query_tags={"team": "a:b"})
        with databricks.sql.connect(**kwargs) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1 AS one")
            assert cursor.fetchall()[0].one == 1
        assert wh.sessions[0].configuration["QUERY_TAGS"] == r"team:a\:b"


def test_the_products_session_sets_only_what_databricks_sql_accepts(
    executor: DuckDBExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The databricks-sql engine's session carries its query tags (`QUERY_TAGS`, a listed
    parameter) and the connector's own setting; each statement its tags as `query_tags`."""
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    with serve_warehouse(executor, token=TOKEN) as wh:
        settings = {
            "host": f"http://{wh.host}:{wh.port}",
            "warehouse_id": wh.warehouse_id,
            "job_name": "ticket_triage",
            "run_id": "run-7",
        }
        engine = DatabricksSQLEngine(settings)
        try:
            assert engine.fetch_one("SELECT 1 AS one") == {"one": 1}
            assert engine.ai_query_missing() is None  # the warehouses API read: PRO
        finally:
            engine.close()
        tags = "agentbatch_job:ticket_triage,agentbatch_run:run-7"
        assert wh.sessions[0].configuration == {"QUERY_TAGS": tags, TIMESTAMPS: "false"}
        assert wh.executions[0].conf_overlay == {"query_tags": tags, TIMESTAMPS: "false"}
