"""A failure nothing in agentbatch foresaw is printed with its traceback, masked.

The trigger is user code the CLI runs: a custom scorer that fails with a BaseException subclass
(as some client libraries raise: trio's Cancelled, gevent's Timeout, pytest's outcomes), which the
scorer's per-row `except Exception` does not turn into a row error. Its message quotes the key
the job declares in `env:` (the scorer calls a service with the same key). The real CLI runs in a
process of its own: before the last-resort handler, Python's own printing of the uncaught
exception put the key on stderr.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from agentbatch.testing.agent_server import serve_agent

from .processes import Finished, run_cli
from .secret_search import file_texts, leaks

TICKETS = Path(__file__).resolve().parents[2] / "agentbatch" / "data" / "support_tickets.csv"
JOB = """
name: eval_keyed
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject, label]
  limit: 3
request: "concat('Classify this support ticket. Ticket: ', subject)"
agent:
  endpoint: apps/triage-agent
  response_format: "STRUCT<label: STRING, urgency: INT>"
output:
  table: main.support.eval_keyed
  mode: overwrite
evaluation:
  expected: label
  scorers:
    - custom: {function: 'remote_checks:scored_remotely', name: remote}
env: [SCORING_KEY]
"""
SCORER = """
import os


class ScoringServiceGone(BaseException):
    pass


def scored_remotely(response, expected, row):
    raise ScoringServiceGone(f"scoring service refused key {os.environ['SCORING_KEY']}")
"""


def _eval_with_scorer(tmp_path: Path, scorer: str) -> tuple[str, Path, Finished]:
    """`eval` of a job whose custom scorer (`scorer`, the module's source) reads the key from
    the job's `env:`: (the key, the project folder, the finished CLI)."""
    key = "scorekey-" + secrets.token_hex(10)
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "eval_keyed.yml").write_text(JOB)
    (project / "remote_checks.py").write_text(scorer)
    with serve_agent() as agent:
        done = run_cli(
            [
                "eval", "jobs/eval_keyed.yml", "--no-progress",
                "--table", f"main.support.tickets={TICKETS}",
                "--endpoint", f"apps/triage-agent={agent.url}",
            ],
            cwd=project,
            env={"SCORING_KEY": key},
        )  # fmt: skip
    return key, project, done


def test_an_unexpected_failure_prints_a_useful_traceback_without_the_secret(
    tmp_path: Path,
) -> None:
    key, _, done = _eval_with_scorer(tmp_path, SCORER)
    assert done.returncode == 1, done.stderr
    err = done.stderr
    assert "unexpected error: ScoringServiceGone: scoring service refused key ***" in err, err
    # The traceback, whole: where it was raised, in the user's file and in agentbatch's.
    assert "Traceback (most recent call last):" in err
    assert 'remote_checks.py", line 10, in scored_remotely' in err
    assert "agentbatch/evaluation/scorers.py" in err
    assert err.rstrip().endswith("ScoringServiceGone: scoring service refused key ***"), err
    assert not leaks([key], {"stderr": err, "stdout": done.stdout}), err


def test_a_scorer_error_quoting_a_secret_is_masked_in_the_scores_table(tmp_path: Path) -> None:
    """A scorer's Exception is that row's scorer error, written to the scores table: masked of
    the registered secrets as an agent's error is in the output table."""
    key, project, done = _eval_with_scorer(
        tmp_path, SCORER.replace("(BaseException)", "(Exception)")
    )
    assert done.returncode == 0, done.stderr
    places = {k: v for k, v in file_texts(project).items() if "remote_checks" not in k}
    scores = [v for k, v in places.items() if k.endswith("(decoded)")]
    assert any("ScoringServiceGone: scoring service refused key ***" in v for v in scores), scores
    assert not leaks([key], {**places, "stderr": done.stderr, "stdout": done.stdout})
