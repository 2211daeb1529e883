"""Run one client in its own process and collect what it measured about itself."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.clients.base import ClientConfig


@dataclass
class Measurement:
    scenario: str
    client: str
    note: str
    rows: int = 0
    ok: int = 0
    failed: int = 0
    unfinished: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    # As the agent server counted them (every client alike); None without a server (S4).
    requests: int | None = None
    http_429: int | None = None
    server_cpu_s: float | None = None
    # From the agent's first request to its last reply (the server's clock): the calls alone.
    agent_busy_s: float | None = None
    # Set when the client process failed or ran out of time: the other fields are then zero.
    error: str | None = None
    # rows/s of every round when the client ran several times (this one is the median run).
    round_rates: list[float] = field(default_factory=list)
    # CPU ms per row of every round, alike.
    round_cpu_ms: list[float] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def fixed_s(self) -> float | None:
        """The client's wall time outside the agent's busy window: set-up and teardown of a run."""
        if self.agent_busy_s is None or not self.wall_s:
            return None
        return max(0.0, self.wall_s - self.agent_busy_s)

    @property
    def busy_rows_per_s(self) -> float | None:
        """Rows per second within the agent's busy window (the fixed cost left out)."""
        return self.ok / self.agent_busy_s if self.agent_busy_s else None

    @property
    def cpu_ms_per_row(self) -> float | None:
        done = self.ok + self.failed
        return 1000.0 * self.cpu_s / done if done else None


def median_run(runs: list[Measurement]) -> Measurement:
    """The run with the median rows/s (the lower one of an even count); a failed run wins, so a
    failure is never hidden by a lucky round."""
    failed = [m for m in runs if m.error]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda m: m.rows_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        chosen.round_rates = [m.rows_per_s for m in runs]
        chosen.round_cpu_ms = [m.cpu_ms_per_row or 0.0 for m in runs]
    return chosen


def run_worker(
    scenario: str, client: str, note: str, config: ClientConfig, timeout_s: float
) -> Measurement:
    """`python -m bench.worker` for one client; a crash or timeout is a Measurement with error."""
    out = Path(config.workdir) / "measurement.json"
    command = [sys.executable, "-m", "bench.worker", client, json.dumps(asdict(config)), str(out)]
    measurement = Measurement(scenario, client, note)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        measurement.error = f"did not finish within {timeout_s:.0f}s"
        return measurement
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        measurement.error = f"exit code {done.returncode}: {last[:200]}"
        return measurement
    values = json.loads(out.read_text(encoding="utf-8"))
    for name, value in values.items():
        setattr(measurement, name, value)
    return measurement
