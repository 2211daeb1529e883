"""The main job, end to end, on this machine: `make demo` (or `python -m agentbatch.demo`).

Starts the demo triage agent on 127.0.0.1 (it speaks the Databricks Apps `/responses` protocol),
runs `jobs/ticket_triage.yml` over the bundled support tickets with the local engine, writes the
output table to `.agentbatch/out/ticket_triage.parquet`, prints the summary and a few rows, and
stops the agent. Run it twice: the second run sends nothing, every ticket is already answered.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from agentbatch.errors import AgentbatchError, exit_code_for

log = logging.getLogger("agentbatch.demo")

JOB = Path("jobs") / "ticket_triage.yml"
OUTPUT = Path(".agentbatch") / "out" / "ticket_triage.parquet"


def sample_tickets() -> Path:
    """The bundled sample: 300 support tickets with a known `label` column."""
    return Path(str(resources.files("agentbatch") / "data" / "support_tickets.csv"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentbatch.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--job", type=Path, default=JOB, help=f"job file (default {JOB})")
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help=f"output file (default {OUTPUT})"
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the demo agent's latency")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from agentbatch.api import run
    from agentbatch.execution.summary import print_run
    from agentbatch.testing.agent_server import serve_agent
    from agentbatch.testing.faults import FaultConfig

    if not args.job.exists():
        log.error("%s not found: run the demo from the project folder", args.job)
        return 2
    try:
        with serve_agent(
            FaultConfig(latency_ms=args.latency_ms, jitter_ms=args.latency_ms / 2)
        ) as agent:
            log.info("demo agent listening on %s", agent.url)
            result = run(
                args.job,
                target="local",
                tables={
                    "main.support.tickets": sample_tickets(),
                    "main.support.ticket_triage": args.output,
                },
                endpoints={"apps/triage-agent": agent.url},
                progress=sys.stderr.isatty(),
            )
            with result:
                print_run(result, show=5)
            _print_accuracy(args.output)
            log.info(
                "agent served %d request(s); output written to %s",
                agent.stats().requests_total,
                args.output,
            )
    except AgentbatchError as err:
        log.error("%s", err)
        return exit_code_for(err)
    return 0


def _print_accuracy(output: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(output, columns=["label", "response", "error"]).to_pylist()
    answered = [row for row in table if row["error"] is None and row["response"]]
    right = sum(1 for row in answered if row["response"].get("label") == row["label"])
    if answered:
        sys.stdout.write(
            f"\n{len(table)} rows in the output; {len(answered)} answered; "
            f"label matches the known label on {right} ({right / len(answered):.0%})\n"
        )


if __name__ == "__main__":
    raise SystemExit(main())
