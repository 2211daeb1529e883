"""Sessions, auth, query tags, metadata calls, polling and volume staging over the wire."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import databricks.sql
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from databricks.sql.client import Connection
from databricks.sql.exc import Error, ServerOperationError

from .server import Warehouse
from .service import WarehouseSettings

Connect = Callable[..., Connection]


def test_bearer_token_arrives_and_is_never_logged(
    connect: Connect, warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    assert warehouse.token is not None
    assert set(warehouse.authorizations) == {f"Bearer {warehouse.token}"}
    assert warehouse.token not in caplog.text


def test_a_wrong_token_is_refused(warehouse: Warehouse) -> None:
    with pytest.raises(Error):
        databricks.sql.connect(
            **warehouse.connect_kwargs(
                access_token="dapi-wrong", _retry_stop_after_attempts_count=1
            )
        )
    assert warehouse.sessions == []


def test_session_configuration_and_query_tags_are_recorded(
    connect: Connect, warehouse: Warehouse
) -> None:
    with (
        connect(session_configuration={"ansi_mode": "true"}, query_tags={"job": "triage"}) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1", query_tags={"run": "r-42"})
    session = warehouse.sessions[0]
    assert session.configuration["ansi_mode"] == "true"
    assert session.configuration["QUERY_TAGS"] == "job:triage"
    statement = warehouse.executions[-1]
    assert statement.conf_overlay["query_tags"] == "run:r-42"
    assert statement.session_conf["QUERY_TAGS"] == "job:triage"


def test_metadata_calls(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA main.meta")
        cur.execute("CREATE TABLE main.meta.things (id BIGINT, name STRING)")
        cur.catalogs()
        assert [r[0] for r in cur.fetchall()] == ["main"]
        cur.schemas(catalog_name="main")
        assert {r[0] for r in cur.fetchall()} >= {"default", "meta"}
        cur.tables(catalog_name="main", schema_name="meta", table_name="th%")
        assert [(r[0], r[1], r[2], r[3]) for r in cur.fetchall()] == [
            ("main", "meta", "things", "TABLE")
        ]
        cur.columns(catalog_name="main", schema_name="meta", table_name="things")
        assert [(r.COLUMN_NAME, r.TYPE_NAME) for r in cur.fetchall()] == [
            ("id", "BIGINT"),
            ("name", "STRING"),
        ]


def test_forced_running_polls_exercise_the_polling_path(
    make_warehouse: Callable[..., Warehouse],
) -> None:
    wh = make_warehouse(settings=WarehouseSettings(running_polls=3))
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 42 AS answer")
        assert cur.fetchall()[0][0] == 42
    assert len(wh.records.polls) == 4  # three forced RUNNING reports, then FINISHED


def test_volume_staging_put_read_get_remove(
    connect: Connect, warehouse: Warehouse, tmp_path: Path
) -> None:
    data = pa.table({"id": [1, 2, 3], "answer": ["a", "b", "c"]})
    sink = io.BytesIO()
    pq.write_table(data, sink)
    local = tmp_path / "local"
    local.mkdir()
    target = "/Volumes/main/default/staging/run-1/part-0.parquet"
    with connect(staging_allowed_local_path=str(local)) as conn, conn.cursor() as cur:
        cur.execute("CREATE VOLUME main.default.staging")
        cur.execute(
            f"PUT '__input_stream__' INTO '{target}' OVERWRITE",
            input_stream=io.BytesIO(sink.getvalue()),
        )
        cur.execute(
            "SELECT id, answer FROM read_files('/Volumes/main/default/staging/run-1', "
            "format => 'parquet') ORDER BY id"
        )
        assert cur.fetchall_arrow().equals(data)
        cur.execute(f"GET '{target}' TO '{local / 'copy.parquet'}'")
        assert pq.read_table(local / "copy.parquet").equals(data)
        cur.execute(f"REMOVE '{target}'")
    assert not (warehouse.volumes_dir / "main/default/staging/run-1/part-0.parquet").exists()


def test_a_put_into_a_volume_never_created_is_refused(connect: Connect, tmp_path: Path) -> None:
    """Files go into a volume made by CREATE VOLUME; a PUT elsewhere is refused, nothing written."""
    with connect(staging_allowed_local_path=str(tmp_path)) as conn, conn.cursor() as cur:
        with pytest.raises(ServerOperationError, match="UC_VOLUME_NOT_FOUND"):
            cur.execute(
                "PUT '__input_stream__' INTO '/Volumes/main/default/nowhere/a.parquet'",
                input_stream=io.BytesIO(b"data"),
            )
        cur.execute("CREATE VOLUME IF NOT EXISTS main.default.somewhere")
        cur.execute("CREATE VOLUME IF NOT EXISTS main.default.somewhere")
        with pytest.raises(ServerOperationError, match="VOLUME_ALREADY_EXISTS"):
            cur.execute("CREATE VOLUME main.default.somewhere")
        cur.execute(
            "PUT '__input_stream__' INTO '/Volumes/main/default/somewhere/deep/a.parquet'",
            input_stream=io.BytesIO(b"data"),
        )
