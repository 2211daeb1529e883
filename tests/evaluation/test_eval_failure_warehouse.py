"""On the databricks-sql target (the unmodified connector against the loopback warehouse), an
eval that fails partway leaves no scores or metrics table either: the earlier ones are dropped
with statements the warehouse runs before the run changes the answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentbatch.errors import AgentError
from agentbatch.evaluation import evaluate
from tests.evaluation.test_eval_compare_failure import (
    ROWS,
    dead_url,
    judged_job,
    passing_judge,
    stopping,
)
from tests.evaluation.test_eval_compare_failure_warehouse import tables_named
from tests.evaluation.test_eval_databricks_sql import (  # noqa: F401 - fixtures
    WarehouseJudge,
    isolated_auth,
    judge,
    on_warehouse,
    warehouse,
)
from tests.support.eval_servers import ScriptedAgent, labeller

AGENT = "apps/triage-agent"


def test_a_judge_that_fails_leaves_no_scores_or_metrics_in_the_warehouse(
    project: Path,
    warehouse: Any,  # noqa: F811 - the fixture
    judge: WarehouseJudge,  # noqa: F811 - the fixture
) -> None:
    job = judged_job(project)
    common = on_warehouse(warehouse, project)
    derived = ["triage_eval_metrics", "triage_eval_scores"]
    with (
        ScriptedAgent(labeller(lambda i: i % 3 != 0)) as a,
        ScriptedAgent(passing_judge) as gone,
        ScriptedAgent(stopping(gone, labeller(lambda i: True))) as c,
    ):
        evaluate(job, endpoints={AGENT: a.url}, **common)
        assert len(judge.calls) == ROWS  # judged in the warehouse, by ai_query
        assert [t for name in derived for t in tables_named(warehouse, name)] == derived
        with pytest.raises(AgentError, match=r"judge-model .* is unreachable"):
            evaluate(
                job,
                # The judge, over REST, is gone once C answers (alive when the eval checked it).
                endpoints={AGENT: c.url, "judge-model": gone.url},
                full_refresh=True,
                **common,
            )
        assert c.requests == ROWS  # the output holds C's answers now
    assert [t for name in derived for t in tables_named(warehouse, name)] == []
    dropped = [s for s in warehouse.statements if s.startswith("DROP TABLE")]
    for name in derived:
        assert any(f"`{name}`" in s for s in dropped)


def test_a_dead_agent_keeps_the_scores_and_metrics_in_the_warehouse(
    project: Path,
    warehouse: Any,  # noqa: F811 - the fixture
    judge: WarehouseJudge,  # noqa: F811 - the fixture
) -> None:
    """Refused by the run's own check (the agent unreachable) before anything is written, the
    eval sends the warehouse no DROP: the earlier scores still describe the answers."""
    job = judged_job(project)
    common = on_warehouse(warehouse, project)
    derived = ["triage_eval_metrics", "triage_eval_scores"]
    with ScriptedAgent(labeller(lambda i: i % 3 != 0)) as a:
        evaluate(job, endpoints={AGENT: a.url}, **common)
    first = len(warehouse.statements)
    with pytest.raises(AgentError, match="unreachable"):
        evaluate(job, endpoints={AGENT: dead_url()}, full_refresh=True, **common)
    assert [t for name in derived for t in tables_named(warehouse, name)] == derived
    assert not [s for s in warehouse.statements[first:] if s.startswith("DROP TABLE")]
