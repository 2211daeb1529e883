"""The demo agent's documented port and help; the dry-run's honest figures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Project, cli

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "agentbatch.testing.agent_server"]
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"


def test_help_says_the_port_and_what_it_answers() -> None:
    text = subprocess.run(
        [*SERVER, "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "port 8000 by default" in text
    assert '"classify" or "triage"' in text and "answer: <the first 80 characters" in text


@pytest.fixture
def port_8000_busy() -> Iterator[None]:
    """Port 8000 taken: by this socket, or already by something else on the machine."""
    sock = socket.socket()
    # As the server binds: a port in TIME_WAIT is free to it, a listening one is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", 8000))
        sock.listen(1)
    except OSError:
        pass  # already busy: the same situation
    try:
        yield
    finally:
        sock.close()


def test_a_busy_default_port_falls_back_and_says_so(port_8000_busy: None) -> None:
    process = subprocess.Popen(SERVER, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":8000")
        note = process.stderr.readline()
        assert "port 8000 is busy; listening on port" in note and url.rsplit(":", 1)[1] in note
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_busy_explicit_port_is_one_line(port_8000_busy: None) -> None:
    done = subprocess.run(
        [*SERVER, "--port", "8000"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "agent_server: cannot listen on 127.0.0.1:8000: Address already in use"
    ]


def test_dry_run_counts_the_rows_it_would_send_and_shows_n(project: Project) -> None:
    job = str(ROOT / "jobs" / "ticket_triage.yml")
    mapped = ["--table", f"main.support.tickets={TICKETS}"]
    done = cli(project, "run", job, *mapped, "--dry-run", "--show", "2", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["summary"]["rows"] == 237  # the open tickets, not 0
    assert len(payload["requests"]) == 2
    done = cli(project, "run", job, *mapped, "--dry-run", "--limit", "3", "--show", "1")
    assert "dry run: a run would send 3 row(s); first 1 request(s)" in done.stdout
    assert done.stdout.count('"key":') == 1
