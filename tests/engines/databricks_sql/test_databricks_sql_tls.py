"""The databricks-sql engine over https, as production connects: the loopback warehouse serves TLS
with a certificate from a CA the test makes, and the engine hands that CA to the connector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import databricks.sql
import pytest

from agentbatch.engines.databricks_sql.engine import DatabricksSQLEngine
from tests.support.databricks_env import isolate
from tests.support.tls_server import make_certificates
from tests.support.warehouse.agents import echo_agent
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse

TOKEN = "dapi-tls-test-token"


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.fixture
def tls_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Warehouse]:
    (tmp_path / "certs").mkdir()
    certs = make_certificates(tmp_path / "certs")
    # databricks-sdk (which resolves the workspace's auth over https first) trusts what
    # `requests` trusts; the connector is handed the CA through its own option (tls_ca_file).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca))
    with (
        DuckDBExecutor(ai_query=echo_agent, volumes_dir=tmp_path / "volumes") as executor,
        serve_warehouse(
            executor,
            token=TOKEN,
            volumes_dir=tmp_path / "volumes",
            tls=(certs.ca, certs.cert, certs.key),
        ) as wh,
    ):
        yield wh


def settings(wh: Warehouse, **extra: object) -> dict[str, object]:
    return {
        "host": f"https://{wh.host}:{wh.port}",
        "warehouse_id": wh.warehouse_id,
        "telemetry": False,
        **extra,
    }


def test_the_connector_reaches_the_warehouse_over_https(tls_warehouse: Warehouse) -> None:
    assert tls_warehouse.url.startswith("https://")
    with (
        databricks.sql.connect(**tls_warehouse.connect_kwargs()) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT ai_query('ep', 'over tls', failOnError => false).errorMessage AS e")
        assert cur.fetchall()[0][0] is None


def test_the_engine_runs_statements_over_https_with_the_ca_it_is_given(
    tls_warehouse: Warehouse,
) -> None:
    engine = DatabricksSQLEngine(settings(tls_warehouse, tls_ca_file=str(tls_warehouse.ca_file)))
    try:
        engine.execute("CREATE SCHEMA IF NOT EXISTS main.tls")
        engine.execute("CREATE TABLE main.tls.t AS SELECT 1 AS id")
        assert engine.fetch_one("SELECT count(*) AS n FROM main.tls.t") == {"n": 1}
    finally:
        engine.close()


def test_a_server_the_ca_does_not_vouch_for_is_refused(tls_warehouse: Warehouse) -> None:
    """Without the test CA the connector uses the system trust store: the certificate is refused."""
    options = tls_warehouse.connect_kwargs(_retry_stop_after_attempts_count=1)
    del options["_tls_trusted_ca_file"]
    with pytest.raises(Exception) as info:
        databricks.sql.connect(**options).close()
    chain, error = [], info.value
    while error is not None:
        chain.append(repr(error))
        error = error.__cause__ or error.__context__
    assert "CERTIFICATE_VERIFY_FAILED" in " ".join(chain)
    assert not tls_warehouse.sessions
