"""Session fixtures: real MLflow servers on 127.0.0.1, each in its own process group.

- `mlflow_agent_server`: MLflow's `AgentServer` (what Databricks Apps agent templates run) with
  the async agent of `servers/agent_app.py`, started by `servers/run_agent_server.py`.
- `responses_model_server` / `chat_model_server`: `mlflow models serve --env-manager local` of a
  `ResponsesAgent` / legacy `ChatAgent` saved from code into a temp dir.

MLflow runs with a throwaway SQLite tracking store inside a temp working directory, so traces
(and the real trace ids they produce) never land in the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVERS = Path(__file__).parent / "servers"
STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class ConformanceServer:
    """A running server and how to call it."""

    name: str
    base_url: str
    # The route an agent call goes to, and the body shape it takes there.
    invoke_path: str
    protocol: str  # "responses" (OpenAI Responses `input`) or "chat_agent" (`messages`)
    streams: bool  # whether `"stream": true` gets SSE back

    @property
    def invoke_url(self) -> str:
        return self.base_url + self.invoke_path


@pytest.fixture(scope="session")
def mlflow_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    # `mlflow models serve` runs `uvicorn` from PATH: use this interpreter's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the whole process group (`mlflow models serve` runs uvicorn as a child)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    # Children may outlive the leader for a moment.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def _process(
    args: list[str], workdir: Path, log_name: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = workdir / log_name
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            env=_env(workdir),
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
        try:
            yield process, log
        finally:
            _stop(process)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture(scope="session")
def mlflow_agent_server(mlflow_workdir: Path) -> Iterator[ConformanceServer]:
    args = [sys.executable, str(SERVERS / "run_agent_server.py")]
    with _process(args, mlflow_workdir, "agent_server.log") as (process, log):
        assert process.stdout is not None
        base_url = process.stdout.readline().decode().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            _stop(process)
            raise RuntimeError(f"agent server did not start:\n{log.read_text()}")
        _wait_ready(f"{base_url}/health", process, log)
        yield ConformanceServer("mlflow AgentServer", base_url, "/responses", "responses", True)


@pytest.fixture(scope="session")
def saved_models(mlflow_workdir: Path) -> Path:
    out = mlflow_workdir / "models"
    subprocess.run(
        [sys.executable, str(SERVERS / "save_models.py"), str(out)],
        cwd=mlflow_workdir,
        env=_env(mlflow_workdir),
        check=True,
        capture_output=True,
        timeout=180,
    )
    return out


@contextlib.contextmanager
def _models_serve(model_dir: Path, workdir: Path, name: str) -> Iterator[str]:
    for _ in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        args = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        with _process(args, workdir, f"{name}.log") as (process, log):
            base_url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(f"{base_url}/ping", process, log)
            except RuntimeError:
                if "address already in use" in log.read_text().lower():
                    continue
                raise
            yield base_url
            return
    raise RuntimeError(f"could not start mlflow models serve for {name}")


@pytest.fixture(scope="session")
def responses_model_server(saved_models: Path, mlflow_workdir: Path) -> Iterator[ConformanceServer]:
    with _models_serve(saved_models / "responses_model", mlflow_workdir, "responses_model") as url:
        yield ConformanceServer(
            "mlflow models serve (ResponsesAgent)", url, "/invocations", "responses", False
        )


@pytest.fixture(scope="session")
def chat_model_server(saved_models: Path, mlflow_workdir: Path) -> Iterator[ConformanceServer]:
    with _models_serve(saved_models / "chat_model", mlflow_workdir, "chat_model") as url:
        yield ConformanceServer(
            "mlflow models serve (ChatAgent)", url, "/invocations", "chat_agent", False
        )


# -- captures -------------------------------------------------------------------------------

CAPTURES = Path(__file__).parent / "captures"
UPDATE_CAPTURES = os.environ.get("AGENTBATCH_UPDATE_CAPTURES") == "1"
_SITE_PACKAGES = re.compile(r"/[^\s\"'\\]+/site-packages/")
_TRACE_ID = re.compile(r"tr-[0-9a-f]{32}")


@dataclass(frozen=True)
class Exchange:
    """One request and the server's real answer."""

    server: str
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: str | None
    status: int
    content_type: str
    body: bytes


class Captures:
    """Saves real exchanges under `captures/` (scrubbed of local paths), then keeps them honest.

    A missing capture is written; an existing one must still match what the server sends
    (modulo trace ids). `AGENTBATCH_UPDATE_CAPTURES=1` rewrites them all.
    """

    def __init__(self, workdir: Path) -> None:
        self._workdir = str(workdir)

    def scrub(self, text: str) -> str:
        return _SITE_PACKAGES.sub("<site-packages>/", text.replace(self._workdir, "<workdir>"))

    def check(self, name: str, exchange: Exchange) -> None:
        body_path = CAPTURES / name
        meta_path = CAPTURES / f"{name}.meta.json"
        body = self.scrub(exchange.body.decode())
        meta = {
            "server": exchange.server,
            "request": {
                "method": exchange.method,
                "path": exchange.path,
                "headers": exchange.request_headers,
                "body": exchange.request_body,
            },
            "response": {"status": exchange.status, "content_type": exchange.content_type},
        }
        if UPDATE_CAPTURES or not body_path.exists():
            CAPTURES.mkdir(exist_ok=True)
            body_path.write_bytes(body.encode())
            meta_path.write_text(json.dumps(meta, indent=2) + "\n")
            return
        assert json.loads(meta_path.read_text()) == meta, f"{name}: status or headers changed"
        saved = body_path.read_bytes().decode()
        assert _TRACE_ID.sub("tr-<id>", saved) == _TRACE_ID.sub("tr-<id>", body), (
            f"{name}: the server's reply changed; rerun with AGENTBATCH_UPDATE_CAPTURES=1"
        )


@pytest.fixture(scope="session")
def captures(mlflow_workdir: Path) -> Captures:
    return Captures(mlflow_workdir)


def exchange(
    server: ConformanceServer,
    path: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Exchange:
    """Send one request with httpx and keep the answer's bytes as they came."""
    import httpx

    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = httpx.request(
        method, server.base_url + path, content=content, headers=sent_headers, timeout=60
    )
    return Exchange(
        server=server.name,
        method=method,
        path=path,
        request_headers=sent_headers if content is not None else {},
        request_body=content.decode() if content is not None else None,
        status=response.status_code,
        content_type=response.headers.get("content-type", ""),
        body=response.content,
    )


@pytest.fixture(scope="session")
def send() -> Callable[..., Exchange]:
    """`send(server, path, body, raw=..., headers=..., method=...) -> Exchange`."""
    return exchange
