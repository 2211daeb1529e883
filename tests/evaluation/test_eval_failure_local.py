"""An eval that fails partway leaves no scores or metrics table that describes other answers.
Before, the `<output>_metrics` of an earlier eval stayed beside answers (or scores) this one had
already rewritten: a dashboard read the old accuracy as the current one. Failures are injected
at real boundaries: a judge endpoint gone once the agent answered, an agent whose answers all fail (the run
stops at the error rate), a scores table mapped under a regular file. An eval refused before it
writes anything (--skip-run without a current answer) leaves the earlier tables as they were."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbatch.errors import AgentError, ConfigError, ErrorRateError, UsageError
from agentbatch.evaluation import evaluate
from tests.evaluation.test_eval_compare_failure import (
    ROWS,
    judged_job,
    passing_judge,
    stopping,
    stored,
)
from tests.support.eval_servers import ScriptedAgent, labeller

AGENT = "apps/triage-agent"
METRIC = "SELECT mean FROM support.triage_eval_metrics WHERE scorer = 'label_exact_match' "
OVERALL = METRIC + "AND group_by IS NULL"  # the overall rows (a NULL group has a group_by)
# An output mapped under a regular file: refused by the engine that would write it, or by the
# file system when it creates the folder.
UNWRITABLE = (ConfigError, OSError)


def eval_tables(project: Path) -> list[str]:
    """The evaluation tables (beyond the answers) the local warehouse holds."""
    found = stored(
        project,
        "SELECT table_name FROM duckdb_tables() WHERE table_name IN "
        "('triage_eval_scores', 'triage_eval_metrics') ORDER BY table_name",
    )
    return [str(name) for (name,) in found]


def right_answers(project: Path) -> int:
    """Answers in the output table whose label is the reference label."""
    (right,) = stored(
        project,
        "SELECT count(*) FROM support.triage_eval "
        "WHERE json_extract_string(to_json(response), '$.label') = label",
    )[0]
    assert isinstance(right, int)
    return right


@pytest.fixture
def agents() -> Iterator[tuple[ScriptedAgent, ScriptedAgent, ScriptedAgent]]:
    """A right on no multiple of 3, C on every id; a judge passing every answer."""
    with (
        ScriptedAgent(labeller(lambda i: i % 3 != 0)) as a,
        ScriptedAgent(labeller(lambda i: True)) as c,
        ScriptedAgent(passing_judge) as judge,
    ):
        yield a, c, judge


def first_eval(
    project: Path, tables: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> list[tuple[object, ...]]:
    """An eval of agent A that succeeds: its overall label accuracy, below 1."""
    a, _, judge = agents
    evaluate(
        judged_job(project),
        tables=tables,
        endpoints={AGENT: a.url, "judge-model": judge.url},
        progress=False,
    )
    assert eval_tables(project) == ["triage_eval_metrics", "triage_eval_scores"]
    accuracy = stored(project, OVERALL)
    assert accuracy and isinstance(accuracy[0][0], float) and accuracy[0][0] < 1.0
    return accuracy


def test_a_judge_that_fails_leaves_no_scores_or_metrics(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    first_eval(project, tickets_table, agents)
    with (
        ScriptedAgent(passing_judge) as gone,
        ScriptedAgent(stopping(gone, labeller(lambda i: True))) as c,
        pytest.raises(AgentError, match=r"judge-model .* is unreachable"),
    ):
        evaluate(
            project / "jobs" / "eval_triage.yml",
            tables=tickets_table,
            # C answers, and the judge is gone (alive when the eval checked it)
            endpoints={AGENT: c.url, "judge-model": gone.url},
            full_refresh=True,  # the agent was redeployed: ask it again
            progress=False,
        )
    assert c.requests == ROWS
    assert right_answers(project) == ROWS  # the output holds C's answers now ...
    assert eval_tables(project) == []  # ... and no metrics saying A's accuracy is current


def test_a_run_stopped_by_its_errors_leaves_no_scores_or_metrics(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    first_eval(project, tickets_table, agents)
    _, _, judge = agents
    job = project / "jobs" / "eval_triage.yml"
    endpoint = "  endpoint: apps/triage-agent\n"
    # One call at a time: the error rate stops the run with rows left unsent.
    job.write_text(job.read_text().replace(endpoint, endpoint + "  max_concurrency: 1\n"))
    with ScriptedAgent(lambda text: "not a triage answer") as broken:
        with pytest.raises(ErrorRateError):
            evaluate(
                job,
                tables=tickets_table,
                endpoints={AGENT: broken.url, "judge-model": judge.url},
                full_refresh=True,
                progress=False,
            )
        assert 0 < broken.requests < ROWS
    (failed,) = stored(project, "SELECT count(*) FROM support.triage_eval WHERE error IS NOT NULL")
    assert failed[0]  # the run wrote the failures it was paid for before it stopped ...
    assert eval_tables(project) == []  # ... and the old accuracy is not left beside them


def test_a_scores_table_that_cannot_be_written_stops_the_eval_before_the_run(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    """Its place is found unwritable when the earlier one is dropped: nothing is paid, and the
    earlier tables, which still describe the answers, are kept."""
    before = first_eval(project, tickets_table, agents)
    _, c, judge = agents
    blocker = project / "blocker"
    blocker.write_text("a file where a folder would be\n")
    unwritable = {"main.support.triage_eval_scores": str(blocker / "scores.parquet")}
    with pytest.raises(UNWRITABLE, match="blocker"):
        evaluate(
            project / "jobs" / "eval_triage.yml",
            tables={**tickets_table, **unwritable},
            endpoints={AGENT: c.url, "judge-model": judge.url},
            full_refresh=True,
            progress=False,
        )
    assert c.requests == 0
    assert right_answers(project) == 2 * ROWS // 3  # still A's answers ...
    assert stored(project, OVERALL) == before  # ... and A's accuracy beside them


def test_a_scores_write_that_fails_after_the_judge_leaves_no_metrics(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    """The scores' folder turns into a file while the judge works: the scores write fails after
    the run and the judge changed their tables, and the earlier metrics are gone already."""
    folder = project / "out" / "scores"
    scores = folder / "scores.parquet"
    tables = {**tickets_table, "main.support.triage_eval_scores": str(scores)}
    blocked: list[str] = []

    def judge_then_block(text: str) -> str:
        if not blocked:
            blocked.append(text)
            shutil.rmtree(folder)
            folder.write_text("a file where a folder would be\n")
        return passing_judge(text)

    a, c, _ = agents
    with ScriptedAgent(judge_then_block) as judge:
        blocked.append("not yet")  # the first eval writes its scores
        evaluate(
            judged_job(project),
            tables=tables,
            endpoints={AGENT: a.url, "judge-model": judge.url},
            progress=False,
        )
        assert scores.is_file() and stored(project, OVERALL)
        blocked.clear()
        endpoints = {AGENT: c.url, "judge-model": judge.url}
        with pytest.raises(UNWRITABLE, match=r"out.scores"):
            evaluate(
                project / "jobs" / "eval_triage.yml",
                tables=tables,
                endpoints=endpoints,
                full_refresh=True,
                progress=False,
            )
        assert c.requests == ROWS and blocked  # C answered, the judge was asked ...
        assert right_answers(project) == ROWS
        assert eval_tables(project) == []  # ... and A's accuracy is not left beside C's answers
        judged = judge.requests
        # Run again where it can write: it scores what the tables hold, paying no one again.
        folder.unlink()
        evaluate(
            project / "jobs" / "eval_triage.yml",
            tables=tables,
            endpoints=endpoints,
            progress=False,
        )
        assert (c.requests, judge.requests) == (ROWS, judged)
    assert stored(project, OVERALL) == [(1.0,)]


def test_a_refused_skip_run_keeps_the_earlier_tables(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    """Nothing is written, so nothing is dropped: the tables still agree with the answers."""
    before = first_eval(project, tickets_table, agents)
    scores = stored(project, "SELECT * FROM support.triage_eval_scores ORDER BY ticket_id")
    a, _, judge = agents
    job = project / "jobs" / "eval_triage.yml"
    job.write_text(job.read_text().replace("Classify this support ticket", "Triage ticket"))
    with pytest.raises(UsageError, match="holds no answer to the current request"):
        evaluate(
            job,  # its prompt edited: the output holds no answer to it
            skip_run=True,
            tables=tickets_table,
            endpoints={AGENT: a.url, "judge-model": judge.url},
            progress=False,
        )
    assert (a.requests, judge.requests) == (ROWS, ROWS)  # the first eval's: nothing sent
    assert stored(project, OVERALL) == before
    assert stored(project, "SELECT * FROM support.triage_eval_scores ORDER BY ticket_id") == scores
