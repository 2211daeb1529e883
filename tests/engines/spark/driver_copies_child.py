"""A run on the driver that the copies test kills mid-way: the spark target's REST fallback with
`rest_fallback_on: driver`, its answers copied to a checkpoint folder every 0.2 s.

Usage: python driver_copies_child.py AGENT_URL WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import agentbatch

JOB = """
name: copies
source: {table: main.support.tickets, key: ticket_id}
request: "concat('Summarise: ', body)"
agent: {endpoint: apps/summariser, max_concurrency: 2}
output: {table: main.support.summaries, mode: merge}
"""


def run(agent_url: str, work_dir: Path, state: str, **settings: Any) -> dict[str, Any]:
    """The job once, on the driver, with `state` as the task's local disk; its summary."""
    job = work_dir / "jobs" / "copies.yml"
    job.parent.mkdir(exist_ok=True)
    job.write_text(JOB)
    with agentbatch.run(
        job,
        target="spark",
        tables={
            "main.support.tickets": work_dir / "tickets.csv",
            "main.support.summaries": work_dir / "summaries",
        },
        endpoints={"apps/summariser": agent_url},
        state_dir=work_dir / state,
        project_dir=work_dir,
        settings={
            "warehouse_dir": str(work_dir / "warehouse"),
            "rest_fallback_on": "driver",
            "checkpoint_dir": str(work_dir / "volume"),
            **settings,
        },
        progress=False,
    ) as result:
        return dict(result.summary)


if __name__ == "__main__":
    url, work = sys.argv[1:3]
    run(url, Path(work), "state", master="local[1]", checkpoint_every_s=0.2)
