"""Child processes for the reliability tests: the fault-injecting agent server and CLI runs.

Everything binds 127.0.0.1 on a port the kernel picks; every process started here is stopped by
its own pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.support.databricks_env import without_credentials

PYTHON = sys.executable


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours without Databricks credentials, plus `extra`."""
    env = without_credentials(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def kill_after(child: subprocess.Popen[Any], delay: float) -> bool:
    """SIGKILL `child` `delay` seconds from now; whether it was still running then."""
    time.sleep(delay)
    running = child.poll() is None
    child.send_signal(signal.SIGKILL)
    return running


FAULT_SERVER = (PYTHON, "-m", "agentbatch.testing.agent_server", "--port", "0")
FAST_AGENT = (PYTHON, str(Path(__file__).parents[1] / "support" / "fast_agent.py"))


class AgentProcess:
    """An agent server in its own process (the fault server unless `command` says otherwise);
    its first line of output is its URL."""

    def __init__(
        self, args: Sequence[str], log_path: Path, command: Sequence[str] = FAULT_SERVER
    ) -> None:
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"agent server did not start: {line!r}, see {log_path}")
        self.url = line

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/_stats")
        return result

    def reset(self) -> None:
        self._request("POST", "/_reset", {})

    def configure(self, **faults: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/_config", faults)
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Finished:
    """`python -m agentbatch <args>` to completion."""
    done = subprocess.run(
        [PYTHON, "-m", "agentbatch", *args],
        cwd=cwd,
        env=child_env(env),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Finished(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
