"""The rows an evaluation scores: for each key of the current selection (the source with its
`where` and `limit`), the output row with the current request fingerprint, read with the current
source's columns (`evaluated_rows.sql`) - whatever else the output table holds (answers of keys
that left the source, of earlier prompts, copies of labels since corrected).

Agents are scripted servers on loopback: every answer, and every request paid, is counted by the
server."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbatch.evaluation.results import EvalResult
from agentbatch.evaluation.run import evaluate
from tests.support.eval_servers import (
    ID_REQUEST,
    ScriptedAgent,
    load_tickets,
    ticket_id_of,
    wrong_label,
)

TICKETS = load_tickets()[:20]
LABELS = {int(t["ticket_id"]): t["label"] for t in load_tickets()}
OTHER_PROMPT = "Summarise this support ticket #"


def job_file(project: Path, mode: str, scorers: str = "") -> Path:
    path = project / "jobs" / "current.yml"
    path.write_text(
        f"""\
name: current
source: {{table: main.s.tickets, key: ticket_id, columns: [subject, label]}}
request: "{ID_REQUEST}"
agent: {{endpoint: apps/triage-agent, response_format: "STRUCT<label: STRING, urgency: INT>"}}
output: {{table: main.s.current_out, mode: {mode}}}
evaluation:
  expected: label
  scorers:
    - exact_match: {{field: label}}
{scorers}"""
    )
    return path


def write_source(project: Path, rows: list[dict[str, str]]) -> dict[str, str]:
    path = project / "data" / "t20.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"main.s.tickets": str(path)}


def agent(right: Callable[[str], bool] = lambda text: True) -> ScriptedAgent:
    """Right (the source's original label) on the requests `right` accepts, wrong on others."""

    def answer(text: str) -> str:
        label = LABELS[ticket_id_of(text)]
        return json.dumps({"label": label if right(text) else wrong_label(label), "urgency": 3})

    return ScriptedAgent(answer)


def accuracy(result: EvalResult) -> tuple[int, float]:
    metric = result.metric("label_exact_match")
    return metric["rows"], metric["mean"]


def test_a_corrected_expected_label_counts_in_merge_mode(project: Path) -> None:
    job = job_file(project, "merge")
    with agent() as server:
        endpoints = {"apps/triage-agent": server.url}
        tables = write_source(project, TICKETS)
        assert accuracy(evaluate(job, tables=tables, endpoints=endpoints, progress=False)) == (
            20,
            1.0,
        )
        fixed = [
            {**t, "label": wrong_label(t["label"])} if n < 10 else t for n, t in enumerate(TICKETS)
        ]
        write_source(project, fixed)
        again = evaluate(job, tables=tables, endpoints=endpoints, progress=False)
        assert server.requests == 20  # nothing paid again: only the ground truth changed
    assert accuracy(again) == (20, 0.5)
    truth = {int(t["ticket_id"]): t["label"] for t in fixed}
    scored = {row["ticket_id"]: row["label"] for row in again.scores.to_pylist()}
    assert scored == truth


@pytest.mark.parametrize("skip_run", [False, True])
def test_rows_that_left_the_source_are_not_scored(project: Path, skip_run: bool) -> None:
    job = job_file(project, "merge")
    with agent(lambda text: ticket_id_of(text) > int(TICKETS[9]["ticket_id"])) as server:
        endpoints = {"apps/triage-agent": server.url}
        tables = write_source(project, TICKETS)
        assert accuracy(evaluate(job, tables=tables, endpoints=endpoints, progress=False)) == (
            20,
            0.5,
        )
        write_source(project, TICKETS[:10])  # the ten the agent gets wrong
        again = evaluate(job, tables=tables, endpoints=endpoints, progress=False, skip_run=skip_run)
        assert server.requests == 20
    assert accuracy(again) == (10, 0.0)
    kept = {int(t["ticket_id"]) for t in TICKETS[:10]}
    assert {row["ticket_id"] for row in again.scores.to_pylist()} == kept
    assert again.scores.num_rows == 10


def test_append_mode_scores_the_current_prompts_answers(project: Path) -> None:
    job = job_file(project, "append")
    v1 = job.read_text()
    v2 = v1.replace("Classify this support ticket #", OTHER_PROMPT)
    assert v2 != v1
    with agent(lambda text: OTHER_PROMPT not in text) as server:
        endpoints = {"apps/triage-agent": server.url}
        tables = write_source(project, TICKETS)
        seen = []
        for text in (v1, v2, v1):
            job.write_text(text)
            result = evaluate(job, tables=tables, endpoints=endpoints, progress=False)
            seen.append((accuracy(result), server.requests))
    # Back to v1: its answers are in the table (nothing sent), and they are what is scored.
    assert seen == [((20, 1.0), 20), ((20, 0.0), 40), ((20, 1.0), 40)]


def test_append_mode_with_a_judge_after_an_edited_prompt(project: Path) -> None:
    with ScriptedAgent(lambda text: "Verdict: PASS") as judge:
        job = job_file(
            project,
            "append",
            f'    - llm_judge: {{endpoint: "{judge.url}", name: judged, '
            'prompt: "Ticket #{ticket_id}: {response.label}, expected {expected}"}\n',
        )
        with agent(lambda text: OTHER_PROMPT not in text) as server:
            endpoints = {"apps/triage-agent": server.url}
            tables = write_source(project, TICKETS)
            first = evaluate(job, tables=tables, endpoints=endpoints, progress=False)
            job.write_text(job.read_text().replace("Classify this support ticket #", OTHER_PROMPT))
            second = evaluate(job, tables=tables, endpoints=endpoints, progress=False)
            assert server.requests == 40
        # The edited prompt's answers changed every judge prompt: each row is judged again,
        # once.
        assert judge.requests == 40
    assert accuracy(first) == (20, 1.0) and accuracy(second) == (20, 0.0)
    judged = second.metric("judged")
    assert (judged["rows"], judged["mean"], judged["errors"]) == (20, 1.0, 0)
