"""Explain a plan: the steps and their SQL, as `agentbatch plan` prints them. Reads the plan only."""

from __future__ import annotations

from collections.abc import Sequence

from agentbatch.agent.redact import safe_url
from agentbatch.planning.definition import Plan, PushDown, Statement


def explain(plan: Plan, *, with_sql: bool = True) -> str:
    job = plan.job
    lines = [
        f"job:       {job.name}",
        f"target:    {plan.target.name} (engine {plan.target.engine})",
        f"strategy:  {plan.strategy} — {plan.reason}",
        f"endpoint:  {safe_url(job.agent.endpoint)} (api {job.agent.api}{', stream' if job.agent.stream else ''})",
        f"output:    {job.output.table} (mode {job.output.mode})",
        f"fingerprint: {plan.call_fingerprint[:16]}",
    ]
    if plan.options.full_refresh and plan.options.refresh_since is not None:
        began = plan.options.refresh_since.isoformat(timespec="seconds")
        lines.append(
            f"refresh:   continues the one begun {began}: keys whose row answers this request "
            "since then are not sent"
        )
    lines.append("")
    steps: list[tuple[str, str | None]] = []
    if isinstance(plan.steps, PushDown):
        steps = [(f"{s.purpose} [{s.template}]", s.sql) for s in plan.steps.statements]
    else:
        fallback = plan.steps
        if fallback.ensure_target:
            steps.append(
                (
                    f"{fallback.ensure_target.purpose} [{fallback.ensure_target.template}]",
                    fallback.ensure_target.sql,
                )
            )
        steps.append(
            (f"{fallback.inputs.purpose} [{fallback.inputs.template}]", fallback.inputs.sql)
        )
        concurrency = fallback.call.max_concurrency or "adaptive"
        where = "answers checkpointed to the ledger"
        if plan.target.engine == "spark":
            from agentbatch.engines.spark.engine import describe_fallback_place

            where = describe_fallback_place(plan.target.settings)
        steps.append(
            (
                f"call {safe_url(job.agent.endpoint)} over REST for each row: concurrency {concurrency}, "
                f"{fallback.call.max_retries} retries, {where}",
                None,
            )
        )
        steps += [(f"{s.purpose} [{s.template}]", s.sql) for s in fallback.write_statements]
    for number, (title, sql) in enumerate(steps, 1):
        lines.append(f"-- step {number}: {title}")
        if sql and with_sql:
            lines.append(sql.rstrip() + ";")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_sql(plan: Plan, statements: Sequence[Statement] | None = None) -> str:
    """Every statement of the plan (or `statements`), each ending in `;` (what `render` writes;
    `compile` writes a push-down plan's with its guards)."""
    chosen = plan.statements if statements is None else statements
    parts = [f"-- {s.purpose} [{s.template}]\n{s.sql.rstrip()};\n" for s in chosen]
    return "\n".join(parts)
