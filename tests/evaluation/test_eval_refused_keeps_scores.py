"""An eval or compare refused by its run's own checks writes nothing, so it keeps the scores,
metrics and comparison an earlier one left: they still describe the answers beside them. Before,
they were dropped before the run, and a dead agent URL or a budget that stopped the run before
any call left the answers without any scores. Each failure is real: a loopback port nothing
listens on, a budget the selection passes, a judge that is gone while the answers are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbatch.errors import AgentError, BudgetError
from agentbatch.evaluation import compare, evaluate
from tests.evaluation.test_eval_compare_failure import (
    COMPARISON,
    ROWS,
    agents,  # noqa: F401 - the four scripted servers, a fixture
    dead_url,
    first_compare,
    stored,
)
from tests.evaluation.test_eval_failure_local import (
    AGENT,
    OVERALL,
    eval_tables,
    first_eval,
)

SCORES = "SELECT * FROM support.triage_eval_scores ORDER BY ticket_id"


def eval_again(project: Path, tables: dict[str, str], **options: object) -> None:
    evaluate(project / "jobs" / "eval_triage.yml", tables=tables, progress=False, **options)


def kept(project: Path, before: object, scores: object) -> None:
    assert eval_tables(project) == ["triage_eval_metrics", "triage_eval_scores"]
    assert stored(project, OVERALL) == before
    assert stored(project, SCORES) == scores


@pytest.mark.parametrize("full_refresh", [False, True])
def test_a_dead_agent_keeps_the_earlier_scores_and_metrics(
    project: Path,
    tickets_table: dict[str, str],
    agents: tuple[object, ...],  # noqa: F811
    full_refresh: bool,
) -> None:
    a, _, _, judge = agents
    before = first_eval(project, tickets_table, (a, None, judge))
    scores = stored(project, SCORES)
    with pytest.raises(AgentError, match="unreachable"):
        eval_again(
            project,
            tickets_table,
            endpoints={AGENT: dead_url(), "judge-model": judge.url},  # type: ignore[attr-defined]
            full_refresh=full_refresh,
        )
    kept(project, before, scores)


def test_a_budget_that_refuses_the_run_keeps_the_earlier_scores_and_metrics(
    project: Path,
    tickets_table: dict[str, str],
    agents: tuple[object, ...],  # noqa: F811
) -> None:
    a, _, c, judge = agents
    before = first_eval(project, tickets_table, (a, None, judge))
    scores = stored(project, SCORES)
    with pytest.raises(BudgetError, match="over max_rows 5"):
        eval_again(
            project,
            tickets_table,
            endpoints={AGENT: c.url, "judge-model": judge.url},  # type: ignore[attr-defined]
            full_refresh=True,  # every row again: 30 rows, over the budget of 5
            settings={"max_rows": 5},
        )
    assert c.requests == 0  # type: ignore[attr-defined]
    kept(project, before, scores)


def test_a_skip_run_whose_judge_is_gone_keeps_the_earlier_scores_and_metrics(
    project: Path,
    tickets_table: dict[str, str],
    agents: tuple[object, ...],  # noqa: F811
) -> None:
    """--skip-run writes only its judges' tables and its own: a judge refused before any call
    leaves the answers, and the scores that describe them, as they were."""
    a, _, _, judge = agents
    before = first_eval(project, tickets_table, (a, None, judge))
    scores = stored(project, SCORES)
    job = project / "jobs" / "eval_triage.yml"
    # A judge asked otherwise must judge every answer again: it cannot reuse its replies.
    job.write_text(job.read_text().replace("name: judged}", "name: judged, temperature: 0.5}"))
    with pytest.raises(AgentError, match=r"judge-model .* is unreachable"):
        eval_again(
            project,
            tickets_table,
            skip_run=True,
            endpoints={AGENT: a.url, "judge-model": dead_url()},  # type: ignore[attr-defined]
        )
    assert a.requests == ROWS  # type: ignore[attr-defined]  # the first eval's: nothing sent
    kept(project, before, scores)


def test_a_compare_whose_first_variant_is_refused_keeps_the_earlier_comparison(
    project: Path,
    tickets_table: dict[str, str],
    agents: tuple[object, ...],  # noqa: F811
) -> None:
    mean_b = first_compare(project, tickets_table, agents)
    b_scores = stored(project, "SELECT * FROM support.triage_eval_b_scores ORDER BY ticket_id")
    _, b, _, judge = agents
    with pytest.raises(AgentError, match="unreachable"):
        compare(
            project / "jobs" / "eval_triage.yml",
            endpoint_a=dead_url(),
            endpoint_b=b.url,  # type: ignore[attr-defined]
            tables=tickets_table,
            endpoints={"judge-model": judge.url},  # type: ignore[attr-defined]
            full_refresh=True,
            progress=False,
        )
    (now,) = stored(project, f"SELECT mean_b FROM {COMPARISON} WHERE scorer = 'label_exact_match'")
    assert now == (mean_b,)
    after = stored(project, "SELECT * FROM support.triage_eval_b_scores ORDER BY ticket_id")
    assert after == b_scores
