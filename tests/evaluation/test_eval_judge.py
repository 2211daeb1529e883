"""LLM judges: a judge is a job of its own, sent to a (scripted) judge endpoint on loopback.

The agent is right on ids not divisible by 3 and answers nonsense on multiples of 25 (a row
error); the judge grades by comparing the answer with the reference, but mumbles on multiples
of 10 (an unparseable verdict). So every judge score, error and request is known in advance.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import agentbatch
from agentbatch.evaluation import evaluate
from agentbatch.evaluation.judge import judge_job
from agentbatch.spec.evaluation import LlmJudge
from agentbatch.spec.loader import load_job
from agentbatch.spec.models import Job
from tests.support.eval_servers import (
    ScriptedAgent,
    labeller,
    load_tickets,
    ticket_id_of,
    write_id_job,
)

IDS = [int(t["ticket_id"]) for t in load_tickets()]
LABELS = {int(t["ticket_id"]): t["label"] for t in load_tickets()}
BROKEN = {i for i in IDS if i % 25 == 0}
MUMBLED = {i for i in IDS if i % 10 == 0}


def right(ticket_id: int) -> bool:
    return ticket_id % 3 != 0


def agent_answer(text: str) -> str:
    if ticket_id_of(text) in BROKEN:
        return "I would rather not say."
    return labeller(right)(text)


def pass_fail_judge(text: str) -> str:
    if ticket_id_of(text) in MUMBLED:
        return "Hmm, hard to say."
    answer = re.search(r"Answer:\n(.*?)\n\nReference answer:\n(.*?)\n\n", text, re.DOTALL)
    assert answer is not None, text
    same = json.loads(answer.group(1))["label"] == answer.group(2)
    return "The label is checked.\nVerdict: PASS" if same else "Verdict: FAIL"


def with_judges(path: Path, scorers: str) -> Path:
    text = path.read_text().replace("    - error_rate:\n", "    - error_rate:\n" + scorers)
    path.write_text(text)
    return path


JUDGES = """\
    - llm_judge: {endpoint: judge-model, name: judged}
    - llm_judge:
        endpoint: judge-model
        name: rated
        verdict: scale
        prompt: "Rate ticket #{ticket_id}. Predicted {response.label}, expected {expected}. Body: {body}"
"""


def scale_judge(text: str) -> str:
    if text.startswith("Rate ticket"):
        predicted, expected = re.search(r"Predicted (\w*), expected (\w*)\.", text).groups()  # type: ignore[union-attr]
        return json.dumps({"score": 5 if predicted == expected else 2})
    return pass_fail_judge(text)


@pytest.fixture
def judged_job(project: Path) -> Path:
    return with_judges(write_id_job(project), JUDGES)


def test_judges_score_every_answered_row(judged_job: Path, tickets_table: dict[str, str]) -> None:
    with ScriptedAgent(agent_answer) as agent, ScriptedAgent(scale_judge) as judge:
        result = evaluate(
            judged_job,
            tables=tickets_table,
            endpoints={"apps/triage-agent": agent.url, "judge-model": judge.url},
            progress=False,
        )
        # Two judges, each asked once per row the agent answered.
        assert judge.requests == 2 * (300 - len(BROKEN))
        bodies = [t for t in judge.texts if t.startswith("Rate ticket")]
        some = bodies[0]
        # The body is not kept in the answers table: it reached the prompt from the source table.
        ticket = next(t for t in load_tickets() if f"#{t['ticket_id']}." in some)
        assert some.endswith(f"Body: {ticket['body']}")
    rows = {r["ticket_id"]: r for r in result.scores.to_pylist()}
    for ticket_id in IDS:
        row = rows[ticket_id]
        if ticket_id in BROKEN:
            assert row["agent_error"] is not None
            assert (row["judged"], row["rated"]) == (0.0, 1.0)  # agent_errors: fail -> lowest
        elif ticket_id in MUMBLED:
            assert row["judged"] is None
            assert "has no PASS/FAIL verdict" in row["judged_error"]
            assert row["rated"] == (5.0 if right(ticket_id) else 2.0)
        else:
            assert row["judged"] == (1.0 if right(ticket_id) else 0.0) == row["label_exact_match"]
            assert row["rated"] == (5.0 if right(ticket_id) else 2.0)
    judged = result.metric("judged")
    assert judged["errors"] == len(MUMBLED - BROKEN)
    assert judged["scored"] == 300 - len(MUMBLED - BROKEN)
    assert result.metric("rated")["ci_method"] == "bootstrap"
    assert result.judge_tables == {
        "judged": "main.support.triage_eval_judge_judged",
        "rated": "main.support.triage_eval_judge_rated",
    }


def test_judges_only_rejudge_changed_answers(
    judged_job: Path, tickets_table: dict[str, str]
) -> None:
    with ScriptedAgent(agent_answer) as agent, ScriptedAgent(scale_judge) as judge:
        endpoints = {"apps/triage-agent": agent.url, "judge-model": judge.url}
        evaluate(judged_job, tables=tickets_table, endpoints=endpoints, progress=False)
        asked = judge.requests
        again = evaluate(
            judged_job, tables=tickets_table, endpoints=endpoints, progress=False, skip_run=True
        )
        assert judge.requests == asked  # same answers, same prompts: nothing to judge again
    assert again.scores.num_rows == 300


def rated_judge(path: Path) -> Job:
    job = load_job(path)
    assert job.evaluation is not None
    options = next(s.options for s in job.evaluation.scorers if s.name == "rated")
    assert isinstance(options, LlmJudge)
    return judge_job(
        job, "rated", options, answers_table=job.output.table,
        judge_table="main.support.triage_eval_judge_rated", expected="label",
    )  # fmt: skip


def test_the_judge_job_is_an_ordinary_job(judged_job: Path) -> None:
    judge = rated_judge(judged_job)
    assert judge.output.mode == "merge" and judge.agent.endpoint == "judge-model"
    assert judge.agent.model_parameters.temperature == 0.0
    sql = agentbatch.render(judge, target="local")
    assert "JOIN `main`.`support`.`triage_eval` AS judged_answers" in sql
    assert "judged_answers.`error` IS NULL" in sql


def test_on_databricks_the_judge_is_pushed_down_to_ai_query(judged_job: Path) -> None:
    judge = rated_judge(judged_job)
    # The databricks-sql engine ships with the package: a NotSupportedError here is a failure.
    pushed = agentbatch.plan(judge, target="databricks-sql")
    assert pushed.strategy == "push-down"
    assert "ai_query('judge-model'" in agentbatch.render(judge, target="databricks-sql")
