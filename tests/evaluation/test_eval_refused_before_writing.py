"""A compare or eval that something refuses as a whole is refused before it drops an earlier one's
tables or pays for a call: both variants' runs (agent reachable, selection, budget), every judge's
URL and every table it writes are checked first. Before, a compare whose B agent was down dropped
the earlier comparison, scores and metrics, paid for every row of A, then failed (exit 6); a dead
judge URL did the same after the runs. Each refusal is real: a loopback port nothing listens on,
a budget the selection passes, a table mapped under a regular file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbatch.errors import AgentError, BudgetError, ConfigError
from agentbatch.evaluation import compare, evaluate
from tests.evaluation.test_eval_compare_failure import (
    ROWS,
    agents,  # noqa: F401 - the four scripted servers, a fixture
    dead_url,
    first_compare,
    judged_job,
    stored,
)
from tests.support.eval_servers import ScriptedAgent

AGENT = "apps/triage-agent"


def every_table(project: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table of the local warehouse, read back whole (its rows, in a fixed order)."""
    names = stored(project, "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL")
    return {
        f"{schema}.{table}": stored(project, f'SELECT * FROM "{schema}"."{table}" ORDER BY ALL')
        for schema, table in names
    }


@dataclass(frozen=True)
class Compared:
    """A project after a first compare, its agents (A, B, C, the judge) and every table then."""

    project: Path
    tables: dict[str, str]
    agents: tuple[ScriptedAgent, ...]
    before: dict[str, list[tuple[object, ...]]]

    def refused(self, refusal: type[Exception], match: str, **options: object) -> None:
        """A compare again (over `self.tables` unless `tables` is given), refused with
        `refusal` (its message matching `match`), every table left as it was."""
        tables = options.pop("tables", self.tables)
        with pytest.raises(refusal, match=match):
            compare(
                self.project / "jobs" / "eval_triage.yml", tables=tables, progress=False, **options
            )
        assert every_table(self.project) == self.before


@pytest.fixture
def compared(
    project: Path,
    tickets_table: dict[str, str],
    agents: tuple[ScriptedAgent, ...],  # noqa: F811 - the fixture
) -> Compared:
    first_compare(project, tickets_table, agents)
    return Compared(project, tickets_table, agents, every_table(project))


def test_a_compare_whose_second_agent_is_dead_keeps_every_table_and_sends_nothing(
    compared: Compared,
) -> None:
    """The audit's case: A's agent up (a new one: every row of A would be paid), B's down."""
    assert "support.triage_eval_comparison" in compared.before
    _, _, c, judge = compared.agents
    judged = judge.requests
    compared.refused(
        AgentError,
        "unreachable",
        endpoint_a=c.url,
        endpoint_b=dead_url(),
        endpoints={"judge-model": judge.url},
    )
    assert c.requests == 0  # no row of A paid for
    assert judge.requests == judged


def test_a_compare_whose_second_variant_passes_the_budget_keeps_every_table(
    compared: Compared,
) -> None:
    """A holds its answers (nothing to send, within the budget); B, a new agent, would send
    every row: over max_rows. A's run passed its checks, and dropped the earlier tables."""
    a, _, c, judge = compared.agents
    compared.refused(
        BudgetError,
        "over max_rows 5",
        endpoint_a=a.url,
        endpoint_b=c.url,
        endpoints={"judge-model": judge.url},
        settings={"max_rows": 5},
    )
    assert c.requests == 0


def test_a_compare_whose_judge_is_dead_keeps_every_table_and_sends_nothing(
    compared: Compared,
) -> None:
    _, b, c, _ = compared.agents
    answered_b = b.requests
    compared.refused(
        AgentError,
        r"judge-model .* is unreachable",
        endpoint_a=c.url,
        endpoint_b=b.url,
        endpoints={"judge-model": dead_url()},
    )
    assert (c.requests, b.requests) == (0, answered_b)


def test_a_compare_whose_second_judge_table_cannot_be_written_sends_nothing(
    compared: Compared,
) -> None:
    """B's judge table, mapped under a regular file: found before A is paid for."""
    _, b, c, judge = compared.agents
    blocker = compared.project / "blocker"
    blocker.write_text("a file where a folder would be\n")
    unwritable = {"main.support.triage_eval_b_judge_judged": str(blocker / "judged.parquet")}
    compared.refused(
        ConfigError,
        "triage_eval_b_judge_judged",
        tables={**compared.tables, **unwritable},
        endpoint_a=c.url,
        endpoint_b=b.url,
        endpoints={"judge-model": judge.url},
    )
    assert c.requests == 0


def test_an_eval_whose_judge_is_dead_keeps_every_table_and_sends_nothing(
    project: Path,
    tickets_table: dict[str, str],
    agents: tuple[ScriptedAgent, ...],  # noqa: F811 - the fixture
) -> None:
    a, _, c, judge = agents
    evaluate(
        judged_job(project),
        tables=tickets_table,
        endpoints={AGENT: a.url, "judge-model": judge.url},
        progress=False,
    )
    before = every_table(project)
    assert {"support.triage_eval_scores", "support.triage_eval_metrics"} <= set(before)
    with pytest.raises(AgentError, match=r"judge-model .* is unreachable"):
        evaluate(
            project / "jobs" / "eval_triage.yml",
            tables=tickets_table,
            endpoints={AGENT: c.url, "judge-model": dead_url()},
            full_refresh=True,  # every row asked again: all paid before the judge, before
            progress=False,
        )
    assert c.requests == 0
    assert a.requests == ROWS  # the first eval's
    assert every_table(project) == before
