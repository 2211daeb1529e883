"""The main job (`jobs/ticket_triage.yml`) over the bundled tickets, as the run tests use it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"
TRIAGE = ROOT / "jobs" / "ticket_triage.yml"
OPEN_TICKETS = 237  # the rows the job selects (`where: status = 'open'`)


def triage_cli_args(out: Path, agent_url: str) -> list[str]:
    """The CLI's mapping of the job's tables and agent: the bundled tickets in, `out` as the
    output table, the agent at `agent_url`."""
    return [
        "--table",
        f"main.support.tickets={TICKETS}",
        "--table",
        f"main.support.ticket_triage={out}",
        "--endpoint",
        f"apps/triage-agent={agent_url}",
    ]
