"""Found by an audit of what `eval` and `compare` report.

`--skip-run` over a source whose key repeats: a run refuses such a source before anything is sent
(one key, one answer); scoring it without a run picked one of the key's source rows at random for
its expected value, and counted the key twice as selected (one "unanswered"). It is refused as a
run refuses it, before anything is written."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from agentbatch.errors import UsageError
from agentbatch.evaluation.run import compare, evaluate
from tests.evaluation.test_eval_current_rows import (
    TICKETS,
    accuracy,
    agent,
    job_file,
    write_source,
)
from tests.support.eval_servers import wrong_label


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_skip_run_over_a_repeated_source_key_is_refused(project: Path, command: str) -> None:
    job = job_file(project, "merge")
    with agent() as server:
        endpoints = {"apps/triage-agent": server.url}
        tables = write_source(project, TICKETS)
        first = evaluate(job, tables=tables, endpoints=endpoints, progress=False)
        assert accuracy(first) == (20, 1.0)
        if command == "compare":
            compare(job, endpoint_b=server.url, tables=tables, endpoints=endpoints, progress=False)
        # The first ticket again, its label another: which is the key's expected label?
        again = {**TICKETS[0], "label": wrong_label(TICKETS[0]["label"])}
        write_source(project, [*TICKETS, again])
        with pytest.raises(UsageError, match="source key 'ticket_id' is not unique"):
            if command == "eval":
                evaluate(job, tables=tables, endpoints=endpoints, progress=False, skip_run=True)
            else:
                compare(
                    job,
                    endpoint_b=server.url,
                    skip_run=True,
                    tables=tables,
                    endpoints=endpoints,
                    progress=False,
                )
        assert server.requests == (20 if command == "eval" else 60)  # compare: A and B
    # Refused before writing: the earlier scores are left as they were.
    database = project / ".agentbatch" / "warehouse" / "main.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        names = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"current_out_scores", "current_out_metrics"} <= names
