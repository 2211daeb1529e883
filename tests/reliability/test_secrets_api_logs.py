"""Log records of agentbatch's loggers are masked wherever they go, not only on the CLI's handler.

Through the Python API the records reach the application's handlers (here pytest's caplog, on the
root logger, and a plain StreamHandler): the secrets registered by then, and token-shaped strings,
are `***` in their messages and tracebacks.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import agentbatch

TICKETS = Path(agentbatch.__file__).parent / "data" / "support_tickets.csv"
JOB = """
name: probe_echo
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
  limit: 3
request: "concat('Reply to: ', subject)"
agent:
  endpoint: support-agent
  api: responses
  max_retries: 0
output:
  table: main.support.probe_echo
"""


@pytest.fixture(autouse=True)
def api_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """agentbatch's loggers as a Python program has them: a CLI run in this process before
    (other tests) gave `agentbatch` its own handler and stopped it propagating."""
    logger = logging.getLogger("agentbatch")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "level", logging.NOTSET)


def _read_request(conn: socket.socket) -> tuple[str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return "", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return lines[0].split(" ")[0], body


@contextmanager
def serve_quoting_probe(key: str) -> Iterator[str]:
    """An agent whose answer to the probe's GET is a broken status line quoting the URL's key
    (a misconfigured gateway); POSTs are answered normally."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                method, _ = _read_request(conn)
                if method == "POST":
                    answer = {
                        "object": "response",
                        "output": [
                            {
                                "type": "message",
                                "role": "assistant",
                                "content": [{"type": "output_text", "text": "fine"}],
                            }
                        ],
                    }
                    body = json.dumps(answer).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                        + body
                    )
                elif method:
                    conn.sendall(f"HTTP/1.1 key {key} is not valid here\r\n\r\n".encode())

    thread = threading.Thread(target=serve, name="quoting-probe", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_url_key_an_agent_quotes_to_the_probe_is_masked_in_the_apis_log_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe logs (DEBUG) what a server that is there but answers oddly said, and goes on;
    through the API that record reaches the application's handlers as it was logged."""
    key = "key" + secrets.token_hex(10)
    job = tmp_path / "jobs" / "probe_echo.yml"
    job.parent.mkdir()
    job.write_text(JOB)
    caplog.set_level(logging.DEBUG, logger="agentbatch")
    with (
        serve_quoting_probe(key) as url,
        agentbatch.run(
            job,
            tables={
                "main.support.tickets": str(TICKETS),
                "main.support.probe_echo": tmp_path / "out.parquet",
            },
            endpoints={"support-agent": f"{url}/agent?code={key}"},
            state_dir=tmp_path / "state",
            progress=False,
        ) as result,
    ):
        assert result.summary["table_rows"] == 3
    assert [r["response"] for r in pq.read_table(tmp_path / "out.parquet").to_pylist()] == [
        "fine"
    ] * 3
    probe = [r.getMessage() for r in caplog.records if r.getMessage().startswith("probe:")]
    assert probe and "key *** is not valid here" in probe[0], probe
    assert key not in caplog.text
    assert not [r for r in caplog.records if key in r.getMessage()]


def test_records_of_any_agentbatch_logger_are_masked_with_their_tracebacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child logger's record (which a filter on the `agentbatch` logger would not see), its
    arguments and its traceback, through a handler of the application's on the root logger."""
    from agentbatch.agent.redact import register_environment_value

    value = "envval-" + secrets.token_hex(10)
    register_environment_value(value)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", logging.INFO)
    child = logging.getLogger("agentbatch.execution.runner")
    try:
        raise KeyError(value)
    except KeyError as err:
        child.warning("lookup of %s failed", err, exc_info=True)
    logging.getLogger("someone.else").warning("their own %s", value)
    printed = out.getvalue()
    assert "agentbatch.execution.runner WARNING lookup of '***' failed" in printed
    assert "KeyError: '***'" in printed  # the traceback, masked, still a traceback
    assert f"their own {value}" in printed  # other loggers' records are theirs
    assert printed.count(value) == 1, printed
