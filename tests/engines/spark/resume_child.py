"""A Spark job the resume test kills mid-way: the triage fallback with a slow agent.

Usage: python resume_child.py AGENT_URL TICKETS_CSV OUTPUT_FOLDER WORK_DIR
"""

from __future__ import annotations

import sys

from agentbatch.engines.spark.engine import SparkEngine
from agentbatch.planning.builder import RestFallback, RunOptions, build_plan
from agentbatch.spec.loader import load_job_text
from agentbatch.planning.targets import Target

JOB = """
name: resume
source:
  table: main.support.tickets
  key: ticket_id
request: "concat('Summarise: ', body)"
agent:
  endpoint: apps/summariser
  max_concurrency: {concurrency}
output:
  table: main.support.summaries
  mode: merge
"""


def steps(agent_url: str, concurrency: int) -> tuple[RestFallback, dict[str, str]]:
    job = load_job_text(JOB.format(concurrency=concurrency), "jobs/resume.yml")
    overrides = {"apps/summariser": agent_url}
    plan = build_plan(job, Target("spark", "spark"), RunOptions(endpoint_overrides=overrides))
    assert isinstance(plan.steps, RestFallback)
    return plan.steps, overrides


def engine(tickets: str, output: str, work_dir: str, **settings: object) -> SparkEngine:
    return SparkEngine(
        {"warehouse_dir": f"{work_dir}/warehouse", "state_dir": f"{work_dir}/state", **settings},
        tables={"main.support.tickets": tickets, "main.support.summaries": output},
        output_tables=["main.support.summaries"],
    )


if __name__ == "__main__":
    url, tickets, output, work_dir = sys.argv[1:5]
    fallback, overrides = steps(url, concurrency=2)
    child = engine(tickets, output, work_dir, master="local[2]", partitions=2)
    child.run_rest_fallback(fallback, endpoint_overrides=overrides)
