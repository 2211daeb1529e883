"""On the databricks-sql target (the unmodified connector against the loopback warehouse), a
compare that fails partway leaves no comparison table either: the earlier one is dropped with a
statement the warehouse runs before the variants' answers change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentbatch.errors import AgentError
from agentbatch.evaluation import compare
from tests.evaluation.test_eval_compare_failure import (
    ROWS,
    judged_job,
    passing_judge,
    stopping,
)
from tests.evaluation.test_eval_databricks_sql import (  # noqa: F401 - fixtures
    WarehouseJudge,
    isolated_auth,
    judge,
    on_warehouse,
    warehouse,
)
from tests.support.eval_servers import ScriptedAgent, labeller


def tables_named(found_in: Any, name: str) -> list[str]:
    import databricks.sql

    with databricks.sql.connect(**found_in.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.tables(catalog_name="main", schema_name="support", table_name=name)
        return [str(row[2]) for row in cur.fetchall() if str(row[2]) == name]


def test_a_judge_that_fails_leaves_no_comparison_in_the_warehouse(
    project: Path,
    warehouse: Any,  # noqa: F811 - the fixture
    judge: WarehouseJudge,  # noqa: F811 - the fixture
) -> None:
    job = judged_job(project)
    common = on_warehouse(warehouse, project)
    with (
        ScriptedAgent(labeller(lambda i: i % 3 != 0)) as a,
        ScriptedAgent(labeller(lambda i: i % 2 == 0)) as b,
        ScriptedAgent(passing_judge) as gone,
        ScriptedAgent(stopping(gone, labeller(lambda i: True))) as c,
    ):
        compare(job, endpoint_a=a.url, endpoint_b=b.url, **common)
        assert len(judge.calls) == 2 * ROWS  # judged in the warehouse, by ai_query
        assert tables_named(warehouse, "triage_eval_comparison") == ["triage_eval_comparison"]
        with pytest.raises(AgentError, match=r"judge-model .* is unreachable"):
            compare(
                job,
                endpoint_a=a.url,
                endpoint_b=c.url,
                # The judge, over REST, is gone once C answers (alive when checked).
                endpoints={"judge-model": gone.url},
                **common,
            )
        assert c.requests == ROWS  # B's table holds C's answers now
    assert tables_named(warehouse, "triage_eval_comparison") == []
    dropped = [s for s in warehouse.statements if s.startswith("DROP TABLE")]
    assert any("`triage_eval_comparison`" in s for s in dropped)
