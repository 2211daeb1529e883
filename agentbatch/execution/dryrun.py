"""Dry-run: plan, count the rows a run would send, and build the first requests exactly as they
would be sent (up to `--limit`, else `SAMPLE_ROWS`; the report prints `--show N` of them). No agent
call is made and nothing is written."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agentbatch.execution.selection import check_passthrough, selection_of
from agentbatch.planning.builder import call_spec
from agentbatch.results import REQUEST_COLUMN

if TYPE_CHECKING:
    from agentbatch.engines.base import Engine
    from agentbatch.execution.result import RunResult
    from agentbatch.planning.definition import Plan

# Requests built for the report to show; `--show N` prints the first N.
SAMPLE_ROWS = 100


def dry_run(plan: Plan, engine: Engine) -> RunResult:
    from agentbatch.agent.bodies import BodyBuilder, RequestError
    from agentbatch.agent.content import row_file, shorten_data_urls
    from agentbatch.agent.response_format import parse_response_format
    from agentbatch.execution.result import RunResult

    # What the run would refuse, the dry run refuses, with the same words; it creates nothing.
    sample_plan, selection = selection_of(plan, engine)
    check_passthrough(sample_plan, engine)
    limit = plan.options.limit or SAMPLE_ROWS
    fmt = plan.job.agent.response_format
    builder = BodyBuilder(
        call_spec(plan.job), response_format=parse_response_format(fmt) if fmt else None
    )
    requests: list[dict[str, Any]] = []
    for batch in engine.fetch_batches(sample_plan.steps.inputs.sql, batch_rows=limit):
        for row in batch.to_pylist():
            if len(requests) < limit:
                try:
                    built = builder.build(row[REQUEST_COLUMN], row_file(row))
                except RequestError as err:  # the row would be an error row, never sent
                    body: Any = {"error": f"[permanent] {err}"}
                else:
                    body = shorten_data_urls(json.loads(built))
                requests.append({"key": row[plan.job.source.key], "body": body})
        if len(requests) >= limit:
            break
    counted = engine.fetch_one(f"SELECT count(*) AS n FROM ({sample_plan.steps.inputs.sql})")
    summary = {
        "job": plan.job.name,
        "target": plan.target.name,
        "strategy": plan.strategy,
        "dry_run": True,
        # The rows a run would select to send now (at most --limit).
        "rows": int(counted.get("n") or 0),
        "errors": 0,
        "sampled_rows": len(requests),
    }
    if "null_keys" in selection:
        summary["null_keys"] = selection["null_keys"]
    return RunResult(plan=plan, summary=summary, engine=None, dry_run_requests=requests)
