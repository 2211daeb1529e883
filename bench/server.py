"""The loopback agent server as a separate process, so client and server do not share a GIL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.scenarios import Scenario

_START_TIMEOUT_S = 30.0


@dataclass
class AgentProcess:
    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=10) as reply:
            data: dict[str, Any] = json.loads(reply.read())
        return data

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_reset", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux /proc; else None)."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # Fields 14 and 15 of stat(5) (utime, stime); index 11 and 12 after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_command(scenario: Scenario) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "agentbatch.testing.agent_server",
        "--port",
        "0",
        "--latency-ms",
        str(scenario.latency_ms),
    ]
    if scenario.capacity is not None:
        command += ["--capacity", str(scenario.capacity)]
    return command


@contextmanager
def agent_process(scenario: Scenario) -> Iterator[AgentProcess]:
    """Start the agent for `scenario` on 127.0.0.1; stop it (and wait for it) on exit."""
    process = subprocess.Popen(
        server_command(scenario),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = _first_line(process)
        yield AgentProcess(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_line(process: subprocess.Popen[str]) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(_START_TIMEOUT_S):
            raise RuntimeError("the agent server did not print its URL in time")
    line = process.stdout.readline().strip()
    if not line.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"the agent server did not start (exit code {process.poll()})")
    return line
