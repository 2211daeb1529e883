"""A compare that fails partway leaves no comparison table. Before, the `<output>_comparison` of
an earlier compare stayed beside variant tables this one had already rewritten: it said B won
while B's table held other answers. Failures are injected at real boundaries: a judge endpoint
that is gone once the agents answered (alive when the compare checked it beforehand: a judge
dead from the start refuses the compare before anything changes), a scores table mapped to a
path that cannot be written."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from agentbatch.errors import AgentError, ConfigError
from agentbatch.evaluation import compare
from tests.support.eval_servers import Answer, ScriptedAgent, labeller, write_id_job

ROWS = 30  # the source's lowest ticket ids
JUDGE = "    - llm_judge: {endpoint: judge-model, name: judged}\n"
COMPARISON = "support.triage_eval_comparison"


def judged_job(project: Path) -> Path:
    path = write_id_job(project)
    columns = "  columns: [subject, label]\n"
    text = path.read_text().replace(columns, f"{columns}  limit: {ROWS}\n")
    path.write_text(text.replace("    - error_rate:\n", "    - error_rate:\n" + JUDGE))
    return path


def passing_judge(text: str) -> str:
    return "Verdict: PASS"


def dead_url() -> str:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def stopping(server: ScriptedAgent, answer: Answer) -> Answer:
    """`answer`, stopping `server` first: a judge alive when the evaluation checks it before
    anything changes, gone once an agent answers (then its port refuses connections)."""
    stopped = threading.Event()

    def answering(text: str) -> str:
        if not stopped.is_set():
            stopped.set()
            server.__exit__(None, None, None)
        return answer(text)

    return answering


def stored(project: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(project / ".agentbatch" / "warehouse" / "main.duckdb"), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def has_table(project: Path, name: str) -> bool:
    found = stored(project, f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{name}'")
    return bool(found[0][0])


def has_comparison(project: Path) -> bool:
    return has_table(project, "triage_eval_comparison")


@pytest.fixture
def agents() -> Iterator[tuple[ScriptedAgent, ScriptedAgent, ScriptedAgent, ScriptedAgent]]:
    """A right on no multiple of 3, B on even ids, C on every id; a judge passing every answer."""
    with (
        ScriptedAgent(labeller(lambda i: i % 3 != 0)) as a,
        ScriptedAgent(labeller(lambda i: i % 2 == 0)) as b,
        ScriptedAgent(labeller(lambda i: True)) as c,
        ScriptedAgent(passing_judge) as judge,
    ):
        yield a, b, c, judge


def first_compare(
    project: Path, tables: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> float:
    """A compare that succeeds: its comparison table, and B's mean label score in it."""
    a, b, _, judge = agents
    compare(
        judged_job(project),
        endpoint_a=a.url,
        endpoint_b=b.url,
        tables=tables,
        endpoints={"judge-model": judge.url},
        progress=False,
    )
    (mean_b,) = stored(
        project, f"SELECT mean_b FROM {COMPARISON} WHERE scorer = 'label_exact_match'"
    )[0]
    assert isinstance(mean_b, float) and mean_b < 1.0
    return mean_b


def b_answers_right(project: Path) -> int:
    (right,) = stored(
        project,
        "SELECT count(*) FROM support.triage_eval_b AS b JOIN support.triage_eval_b_scores AS s "
        "USING (ticket_id) WHERE s.label_exact_match = 1",
    )[0]
    assert isinstance(right, int)
    return right


def test_a_judge_that_fails_leaves_no_comparison(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    first_compare(project, tickets_table, agents)
    a, _, _, _ = agents
    with (
        ScriptedAgent(passing_judge) as gone,
        ScriptedAgent(stopping(gone, labeller(lambda i: True))) as c,
        pytest.raises(AgentError, match=r"judge-model .* is unreachable"),
    ):
        compare(
            project / "jobs" / "eval_triage.yml",
            endpoint_a=a.url,
            endpoint_b=c.url,  # B is now an agent right on every ticket ...
            tables=tickets_table,
            endpoints={"judge-model": gone.url},  # ... and the judge is gone once it answers
            progress=False,
        )
    assert c.requests == ROWS  # B's table holds C's answers now
    answers = stored(project, "SELECT count(*) FROM support.triage_eval_b")
    assert answers == [(ROWS,)]
    assert not has_comparison(project)  # not the old one, which said B was right on half
    # Nor B's old scores and metrics beside B's new answers.
    assert not has_table(project, "triage_eval_b_scores")
    assert not has_table(project, "triage_eval_b_metrics")


def test_a_scores_table_that_cannot_be_written_stops_the_compare_before_any_call(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    mean_before = first_compare(project, tickets_table, agents)
    a, _, c, judge = agents
    blocker = project / "blocker"
    blocker.write_text("a file where a folder would be\n")
    unwritable = {"main.support.triage_eval_b_scores": str(blocker / "scores.parquet")}
    with pytest.raises(ConfigError, match=r"triage_eval_b_scores.*is a file, not a folder"):
        compare(
            project / "jobs" / "eval_triage.yml",
            endpoint_a=a.url,
            endpoint_b=c.url,
            tables={**tickets_table, **unwritable},
            endpoints={"judge-model": judge.url},
            progress=False,
        )
    # Found when the earlier compare's tables are dropped, before any call: nothing changed, so
    # the earlier comparison stays, and agrees with the answers beside it.
    assert c.requests == 0
    mean_b = stored(project, f"SELECT mean_b FROM {COMPARISON} WHERE scorer = 'label_exact_match'")
    assert mean_b == [(mean_before,)]
    # The compare run again, where it can write, compares what the tables hold.
    compare(
        project / "jobs" / "eval_triage.yml",
        endpoint_a=a.url,
        endpoint_b=c.url,
        tables=tickets_table,
        endpoints={"judge-model": judge.url},
        progress=False,
    )
    assert c.requests == ROWS  # each row paid once
    assert b_answers_right(project) == ROWS
    mean_b = stored(project, f"SELECT mean_b FROM {COMPARISON} WHERE scorer = 'label_exact_match'")
    assert mean_b == [(1.0,)]


def test_a_comparison_mapped_to_a_file_is_removed_before_the_variants_change(
    project: Path, tickets_table: dict[str, str], agents: tuple[ScriptedAgent, ...]
) -> None:
    """A comparison table mapped with --table to a Parquet file: the file goes, as a table."""
    a, b, _, judge = agents
    comparison_file = project / "out" / "comparison.parquet"
    mapped = {**tickets_table, "main.support.triage_eval_comparison": str(comparison_file)}
    compare(
        judged_job(project),
        endpoint_a=a.url,
        endpoint_b=b.url,
        tables=mapped,
        endpoints={"judge-model": judge.url},
        progress=False,
    )
    assert comparison_file.exists()
    with (
        ScriptedAgent(passing_judge) as gone,
        ScriptedAgent(stopping(gone, labeller(lambda i: True))) as c,
        pytest.raises(AgentError, match=r"judge-model .* is unreachable"),
    ):
        compare(
            project / "jobs" / "eval_triage.yml",
            endpoint_a=a.url,
            endpoint_b=c.url,
            tables=mapped,
            endpoints={"judge-model": gone.url},
            progress=False,
        )
    assert not comparison_file.exists()
