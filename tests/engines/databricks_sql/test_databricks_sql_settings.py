"""Pure parts of the databricks-sql engine: addresses, types, staging payloads."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agentbatch.engines.databricks_sql.connect import warehouse_address, workspace_host
from agentbatch.engines.databricks_sql.engine import DatabricksSQLEngine
from agentbatch.engines.databricks_sql.staging import (
    JsonParameterLoader,
    chunks,
    databricks_type,
    volume_path,
)
from agentbatch.errors import ConfigError, NotSupportedError
from tests.support.databricks_env import isolate


@pytest.fixture(autouse=True)
def no_ambient_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.mark.parametrize(
    ("settings", "sdk_host", "uri"),
    [
        ({"warehouse_id": "abc123"}, "https://adb-1.azuredatabricks.net", "https://adb-1.azuredatabricks.net:443/sql/1.0/warehouses/abc123"),
        ({"http_path": "sql/1.0/warehouses/x"}, "dbc-1.cloud.databricks.com", "https://dbc-1.cloud.databricks.com:443/sql/1.0/warehouses/x"),
        ({"warehouse_id": "w", "scheme": "http", "port": 8080}, "https://127.0.0.1", "http://127.0.0.1:8080/sql/1.0/warehouses/w"),
        ({"warehouse_id": "w"}, "http://127.0.0.1:5123", "http://127.0.0.1:5123/sql/1.0/warehouses/w"),
    ],
)  # fmt: skip
def test_warehouse_address(settings: dict[str, Any], sdk_host: str, uri: str) -> None:
    assert warehouse_address(settings, sdk_host).uri == uri


def test_warehouse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", "envwh")
    assert warehouse_address({}, "https://h").http_path == "/sql/1.0/warehouses/envwh"
    monkeypatch.setenv("DATABRICKS_HTTP_PATH", "/sql/1.0/warehouses/frompath")
    assert warehouse_address({}, "https://h").http_path == "/sql/1.0/warehouses/frompath"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "no SQL warehouse"),
        ({"warehouse_id": "../etc"}, "not a SQL warehouse id"),
        ({"warehouse_id": "w", "scheme": "ftp"}, "scheme"),
        ({"warehouse_id": "w", "port": "eighty"}, "port"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        warehouse_address(settings, "https://h")


def test_workspace_host_for_the_sdk() -> None:
    assert workspace_host({}) is None
    assert workspace_host({"host": "adb-1.net"}) == "https://adb-1.net"
    assert (
        workspace_host({"host": "127.0.0.1", "scheme": "http", "port": 81}) == "http://127.0.0.1:81"
    )
    assert workspace_host({"host": "https://adb-1.net/"}) == "https://adb-1.net"


def test_staging_relation_sits_beside_the_target_one_per_run() -> None:
    assert (
        DatabricksSQLEngine.staging_relation("main.support.triage", "20261205T082233_ab12cd34")
        == "`main`.`support`.`triage__agentbatch_staged_20261205T082233_ab12cd34`"
    )
    assert DatabricksSQLEngine.staging_relation("t", "r-1") == "`t__agentbatch_staged_r_1`"


@pytest.mark.parametrize(
    ("arrow", "ddl"),
    [
        (pa.int32(), "INT"),
        (pa.int64(), "BIGINT"),
        (pa.float64(), "DOUBLE"),
        (pa.large_string(), "STRING"),
        (pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
        (pa.timestamp("us"), "TIMESTAMP_NTZ"),
        (pa.decimal128(10, 2), "DECIMAL(10,2)"),
        (pa.list_(pa.string()), "ARRAY<STRING>"),
        (pa.map_(pa.string(), pa.int64()), "MAP<STRING, BIGINT>"),
        (pa.struct([("label", pa.string()), ("urgency", pa.int32())]), "STRUCT<`label`: STRING, `urgency`: INT>"),
        (pa.null(), "STRING"),
    ],
)  # fmt: skip
def test_databricks_types(arrow: pa.DataType, ddl: str) -> None:
    assert databricks_type(arrow) == ddl


@pytest.mark.parametrize(
    ("setting", "path"),
    [
        ("main.default.staging", "/Volumes/main/default/staging"),
        ("/Volumes/main/default/staging/", "/Volumes/main/default/staging"),
        ("/Volumes/c/s/v/sub.dir", "/Volumes/c/s/v/sub.dir"),
    ],
)
def test_volume_paths(setting: str, path: str) -> None:
    assert volume_path(setting) == path


@pytest.mark.parametrize(
    "bad", ["main.default", "/tmp/x", "/Volumes/a/b/c/it's", "/Volumes/a/../c/d"]
)
def test_bad_volume_paths(bad: str) -> None:
    with pytest.raises(ConfigError, match="staging_volume"):
        volume_path(bad)


def test_chunks_regroup_batches() -> None:
    table = pa.table({"x": list(range(10))})
    sizes = [c.num_rows for c in chunks(table.to_batches(max_chunksize=3), 4)]
    assert sizes == [4, 4, 2]


def test_json_payloads_respect_rows_and_bytes() -> None:
    sent: list[tuple[str, Any]] = []
    loader = JsonParameterLoader(
        run=lambda sql, p: sent.append((sql, p)), max_rows=50, max_bytes=2_000
    )
    table = pa.table({"id": list(range(120)), "text": ["x" * 40] * 120})
    assert loader.load("`t`", table.to_batches(), table.schema) == 120
    payloads = [json.loads(p["rows"]) for _, p in sent]
    assert sum(len(p) for p in payloads) == 120
    assert all(len(p) <= 50 for p in payloads)
    assert all(len(params["rows"]) <= 2_000 for _, params in sent)
    assert [r["id"] for p in payloads for r in p] == list(range(120))
    assert "explode(from_json(:rows, 'ARRAY<STRUCT<`id`: BIGINT, `text`: STRING>>'))" in sent[0][0]


def test_a_row_over_the_parameter_limit_is_left_out_and_named() -> None:
    """A statement's parameters carry at most 1 MB: a row larger than that alone is not staged
    (the warehouse would refuse the statement) but named for the write to report."""
    sent: list[tuple[str, Any]] = []
    loader = JsonParameterLoader(run=lambda sql, p: sent.append((sql, p)), key="id")
    table = pa.table({"id": [1, 2, 3], "text": ["short", "x" * 1_200_000, "short too"]})
    assert loader.load("`t`", table.to_batches(), table.schema) == 2
    assert [r["id"] for _, p in sent for r in json.loads(p["rows"])] == [1, 3]
    assert all(len(p["rows"]) <= 900_000 for _, p in sent)
    assert loader.too_large == ["2 (1,200,018 bytes)"]  # {"id":2,"text":"x..."}


def test_a_missing_warehouse_is_said_before_the_workspace_is_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No warehouse configured: the error comes at once, not after databricks-sdk has tried the
    workspace (a host that does not answer held it for minutes)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    silent.setblocking(False)
    monkeypatch.setenv("DATABRICKS_HOST", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-test")
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            DatabricksSQLEngine({}).fetch_one("SELECT 1")
        except BaseException as err:
            outcome.append(err)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout=30)
    try:
        assert not worker.is_alive(), "still waiting on the workspace"
        assert isinstance(outcome[0], ConfigError) and "no SQL warehouse given" in str(outcome[0])
        with pytest.raises(BlockingIOError):
            silent.accept()  # nobody connected
    finally:
        silent.close()


def test_json_payload_maps_travel_keyed_by_string_and_are_cast_back() -> None:
    """from_json reads only MAPs keyed by STRING (Databricks: INVALID_JSON_MAP_KEY_TYPE): a MAP
    keyed otherwise, at any depth, is read keyed by STRING and cast to its type; only such a
    column is cast. An empty MAP is an empty object (`[]` would read as NULL)."""
    sent: list[tuple[str, Any]] = []
    loader = JsonParameterLoader(run=lambda sql, p: sent.append((sql, p)))
    int_map = pa.map_(pa.int32(), pa.string())
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "attrs": pa.array([[(1, "a"), (-2, "b")], []], int_map),
            "nested": pa.array([[[(3, "c")]], None], pa.list_(int_map)),
            "plain": pa.array([[("k", "v")], []], pa.map_(pa.string(), pa.string())),
        }
    )
    assert loader.load("`t`", table.to_batches(), table.schema) == 2
    sql, params = sent[0]
    assert (
        "SELECT `rows`.`id`, CAST(`rows`.`attrs` AS MAP<INT, STRING>), "
        "CAST(`rows`.`nested` AS ARRAY<MAP<INT, STRING>>), `rows`.`plain`\n"
    ) in sql
    assert (
        "from_json(:rows, 'ARRAY<STRUCT<`id`: BIGINT, `attrs`: MAP<STRING, STRING>, "
        "`nested`: ARRAY<MAP<STRING, STRING>>, `plain`: MAP<STRING, STRING>>>')"
    ) in sql
    assert json.loads(params["rows"]) == [
        {"id": 1, "attrs": {"1": "a", "-2": "b"}, "nested": [{"3": "c"}], "plain": {"k": "v"}},
        {"id": 2, "attrs": {}, "nested": None, "plain": {}},
    ]


def test_a_map_keyed_by_binary_is_not_staged_through_a_parameter() -> None:
    loader = JsonParameterLoader(run=lambda sql, p: None)
    table = pa.table({"m": pa.array([[(b"\x00", 1)]], pa.map_(pa.binary(), pa.int32()))})
    with pytest.raises(NotSupportedError, match="staging_volume"):
        loader.load("`t`", table.to_batches(), table.schema)
