"""The evaluation on the databricks-sql target: the unmodified connector against the loopback SQL
warehouse. The Apps agent answers over REST; the judge runs *inside* the warehouse as push-down
`ai_query`; scores and metrics are written as warehouse tables."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbatch.evaluation import evaluate
from agentbatch.testing.agent_server import AgentServer
from tests.evaluation.test_eval_example_local import expected_accuracy
from tests.support.databricks_env import isolate
from tests.support.warehouse import duckdb_executor as warehouse_duckdb
from tests.support.warehouse import server as warehouse_server

TOKEN = "dapi-eval-test-token"


class WarehouseJudge:
    """`ai_query` in the warehouse: PASS when the answer's label is the reference label."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, endpoint: str, request: Any, **named: Any) -> str:
        assert endpoint == "judge-model"
        with self._lock:
            self.calls.append(str(request))
        found = re.search(
            r"Answer:\n(.*?)\n\nReference answer:\n(.*?)\n\n", str(request), re.DOTALL
        )
        if found is None:
            return "no idea"
        same = json.loads(found.group(1))["label"] == found.group(2)
        return "Verdict: PASS" if same else "Verdict: FAIL"


def on_warehouse(warehouse: Any, project: Path) -> dict[str, Any]:
    """`evaluate` / `compare` options for the databricks-sql target on the loopback warehouse."""
    settings = {
        "host": f"http://{warehouse.host}:{warehouse.port}",
        "warehouse_id": warehouse.warehouse_id,
    }
    return dict(
        target="databricks-sql", settings=settings, state_dir=project / "state", progress=False
    )


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.fixture
def judge() -> WarehouseJudge:
    return WarehouseJudge()


@pytest.fixture
def warehouse(tmp_path: Path, judge: WarehouseJudge) -> Iterator[Any]:
    import databricks.sql

    from tests.support.eval_servers import TICKETS_CSV

    volumes = tmp_path / "volumes"
    raw = volumes / "main" / "support" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(TICKETS_CSV, raw / "support_tickets.csv")
    with (
        warehouse_duckdb.DuckDBExecutor(ai_query=judge, volumes_dir=volumes) as executor,
        warehouse_server.serve_warehouse(executor, token=TOKEN, volumes_dir=volumes) as wh,
    ):
        with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA main.support")
            cur.execute(
                "CREATE TABLE main.support.tickets AS SELECT * FROM "
                "read_files('/Volumes/main/support/raw/support_tickets.csv', format => 'csv')"
            )
        yield wh


def test_evaluation_in_the_warehouse(
    project: Path, warehouse: Any, judge: WarehouseJudge, demo_agent: AgentServer
) -> None:
    import databricks.sql

    job = project / "jobs" / "eval_triage.yml"
    job.write_text(
        job.read_text().replace(
            "    - error_rate:\n",
            "    - error_rate:\n    - llm_judge: {endpoint: judge-model, name: judged}\n",
        )
    )
    result = evaluate(
        job, endpoints={"apps/triage-agent": demo_agent.url}, **on_warehouse(warehouse, project)
    )
    accuracy = expected_accuracy()
    assert result.run_summary is not None and result.run_summary["strategy"] == "rest-fallback"
    assert result.metric("label_exact_match")["mean"] == pytest.approx(accuracy)
    # The judge, run by the warehouse's ai_query, agrees with exact match on every row.
    judged = result.metric("judged")
    assert judged["mean"] == pytest.approx(accuracy) and judged["errors"] == 0
    assert len(judge.calls) == 300
    statements = "\n".join(warehouse.statements)
    assert "ai_query('judge-model'" in statements
    assert "CREATE OR REPLACE TABLE `main`.`support`.`triage_eval_scores`" in statements
    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(judged) FROM main.support.triage_eval_scores")
        assert tuple(cur.fetchone()) == (300, pytest.approx(accuracy * 300))
        cur.execute(
            "SELECT mean FROM main.support.triage_eval_metrics "
            "WHERE scorer = 'label_exact_match' AND group_by IS NULL"
        )
        assert cur.fetchone()[0] == pytest.approx(accuracy)


def test_a_derived_table_name_over_the_unity_catalog_limit_is_refused_before_any_call(
    project: Path, warehouse: Any, judge: WarehouseJudge, demo_agent: AgentServer
) -> None:
    """The scores and metrics tables are named `<output.table>_scores`, `_metrics`: with a
    250-character output table (a valid name) they would pass Unity Catalog's 255 characters,
    which Databricks (and the loopback) refuses. The eval is refused as a job error while it is
    prepared (it used to start the run, then stop on a bare ValueError), naming the limit;
    nothing is sent or created."""
    from agentbatch.errors import SpecError

    job = project / "jobs" / "eval_triage.yml"
    long_name = "e" * 250
    job.write_text(job.read_text().replace('.support.triage_eval"', f'.support.{long_name}"'))
    assert long_name in job.read_text()
    with pytest.raises(SpecError, match=r"over the 255 of a Unity Catalog name"):
        evaluate(
            job,
            endpoints={"apps/triage-agent": demo_agent.url},
            **on_warehouse(warehouse, project),
        )
    assert demo_agent.stats().requests_total == 0 and judge.calls == []
    assert not any(s.startswith("CREATE") for s in warehouse.statements[2:])
