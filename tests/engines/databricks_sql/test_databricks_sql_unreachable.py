"""A workspace or warehouse that does not answer is said within seconds, not after minutes of
silence: databricks-sdk probes an unreachable host's metadata for up to 5 minutes before it
gives up (sdk `config.py` `_resolve_host_metadata`), and the connector retries opening a session
for up to 15 (`_retry_stop_after_attempts_duration`). Both log nothing agentbatch's log shows;
the engine now names the step and the host while it waits."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbatch.agent import waiting
from agentbatch.engines.databricks_sql.engine import DatabricksSQLEngine
from tests.support.databricks_env import isolate

TOKEN = "dapi-unreachable-test-token"


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collected]:
    monkeypatch.setattr(waiting, "FIRST_REPORT_S", 0.3)
    collected = Collected()
    logger = logging.getLogger(waiting.__name__)
    logger.addHandler(collected)
    try:
        yield collected
    finally:
        logger.removeHandler(collected)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect_in_background(host: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The engine's first statement, in a thread left waiting (a daemon: the SDK and the
    connector give up minutes later)."""
    isolate(monkeypatch, tmp_path, host=host, token=TOKEN)
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", "abc123")
    engine = DatabricksSQLEngine({"telemetry": False})
    threading.Thread(target=lambda: engine.fetch_one("SELECT 1"), daemon=True).start()


def wait_for(collected: Collected, text: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [line for line in collected.lines if text in line]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"nothing said about {text!r} in 30 s: {collected.lines}")


def test_a_host_nobody_listens_on_is_named_while_it_is_retried(
    said: Collected, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    connect_in_background(host, monkeypatch, tmp_path)
    line = wait_for(said, "still waiting")
    assert host.removeprefix("http://") in line, line
    assert "check" in line and TOKEN not in line


class StartingWarehouse(http.server.BaseHTTPRequestHandler):
    """A workspace whose metadata is not there (the SDK goes on without it) and whose warehouse
    answers 503 to the session's opening (the connector retries it)."""

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(503)
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_warehouse_that_does_not_open_a_session_is_named_while_it_is_retried(
    said: Collected, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StartingWarehouse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        connect_in_background(f"http://127.0.0.1:{port}", monkeypatch, tmp_path)
        line = wait_for(said, "opening a session")
        assert f"127.0.0.1:{port}/sql/1.0/warehouses/abc123" in line, line
        assert "still waiting" in line and TOKEN not in line
    finally:
        server.shutdown()
        server.server_close()
