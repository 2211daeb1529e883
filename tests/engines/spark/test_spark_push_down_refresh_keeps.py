"""A push-down `--full-refresh` on the spark target (the registered ai_query, file tables) keeps
a row's earlier answer when its new call fails transiently (a 503 past ai_query's retries), as
the REST fallback does (tests/reliability/test_refresh_keeps_answers.py): a permanent failure
replaces the answer; the refresh stays unfinished for the kept rows and the next plain run asks
exactly them. In each mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentbatch.testing.agent_server import serve_agent
from tests.engines.spark.file_project import (
    HEALTHY,
    PUSH_DOWN,
    TEXTS,
    Project,
    refresh_keeps_and_continues,
)

JOB = """\
name: pd_keeps
source: {{table: main.s.src, key: id, columns: [txt]}}
request: "concat('Q: ', txt)"
agent: {{endpoint: pdmodel, api: chat}}
output: {{table: main.s.out, mode: {mode}}}
"""


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_transient_failure_in_a_push_down_refresh_keeps_the_earlier_answer(
    tmp_path: Path, make_engine: Any, mode: str
) -> None:
    make_engine()  # the suite's session is the active one: the runs use it
    with serve_agent(HEALTHY) as agent:
        project = Project(tmp_path, agent, TEXTS, JOB.format(mode=mode), "pd.yml")
        refresh_keeps_and_continues(project, PUSH_DOWN, {"sent": 5, "errors": 3})
