"""Session fixtures: real MLflow servers on 127.0.0.1, each in its own process group.

- `mlflow_agent_server`: MLflow's `AgentServer` (what Databricks Apps agent templates run) with
  the async agent of `servers/agent_app.py`, started by `servers/run_agent_server.py`.
- `responses_model_server` / `chat_model_server`: `mlflow models serve --env-manager local` of a
  `ResponsesAgent` / legacy `ChatAgent` saved from code into a temp dir.

All three start together the first time any is asked for (MLflow takes seconds to boot), each
with its own throwaway SQLite tracking store inside a temp working directory, so traces (and the
real trace ids they produce) never land in the checkout. Teardown kills each process group.
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
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.snapshots import expect_saved

SERVERS = Path(__file__).parent / "servers"
STARTUP_TIMEOUT_S = 120.0
MODELS = ("responses_model", "chat_model")


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


def _env(workdir: Path, store: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / store}.db"
    # `mlflow models serve` runs `uvicorn` from PATH: use this interpreter's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"exited with {self.popen.returncode}:\n{self.log.read_text()}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"not ready after {STARTUP_TIMEOUT_S}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Stop the whole process group (`mlflow models serve` runs uvicorn as a child)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # children can outlive the leader
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class Launcher:
    """Starts the AgentServer at once and, from a helper thread, saves and serves the models."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._lock = threading.Lock()
        self._processes: list[_Process] = []
        self._model_urls: dict[str, tuple[_Process, str]] = {}
        self._failure: BaseException | None = None
        self._agent = self._spawn(
            [sys.executable, str(SERVERS / "run_agent_server.py")], "agent_server", stdout=True
        )
        self._models_thread = threading.Thread(target=self._start_models, daemon=True)
        self._models_thread.start()

    def _spawn(self, args: list[str], name: str, *, stdout: bool = False) -> _Process:
        log = self._workdir / f"{name}.log"
        with log.open("wb") as log_file:
            popen = subprocess.Popen(
                args,
                cwd=self._workdir,
                env=_env(self._workdir, name),
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )
        process = _Process(popen, log)
        with self._lock:
            self._processes.append(process)
        return process

    def _start_models(self) -> None:
        try:
            out = self._workdir / "models"
            subprocess.run(
                [sys.executable, str(SERVERS / "save_models.py"), str(out)],
                cwd=self._workdir,
                env=_env(self._workdir, "save_models"),
                check=True,
                capture_output=True,
                timeout=300,
            )
            for name in MODELS:
                self._model_urls[name] = self._serve(out / name, name)
        except BaseException as error:  # reported by model_server()
            self._failure = error

    def _serve(self, model_dir: Path, name: str) -> tuple[_Process, str]:
        port = _free_port()
        args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
        args += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        return self._spawn(args, name), f"http://127.0.0.1:{port}"

    def agent_server(self) -> str:
        stdout = self._agent.popen.stdout
        assert stdout is not None
        base_url = stdout.readline().decode().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"AgentServer did not start:\n{self._agent.log.read_text()}")
        self._agent.wait_ready(f"{base_url}/health")
        return base_url

    def model_server(self, name: str) -> str:
        self._models_thread.join(timeout=STARTUP_TIMEOUT_S)
        if self._failure is not None:
            raise RuntimeError(f"could not save or serve the models: {self._failure!r}")
        for _ in range(3):
            process, url = self._model_urls[name]
            try:
                process.wait_ready(f"{url}/ping")
                return url
            except RuntimeError:
                # The probed free port can be taken before uvicorn binds it: try another.
                if "address already in use" not in process.log.read_text().lower():
                    raise
                self._model_urls[name] = self._serve(self._workdir / "models" / name, name)
        raise RuntimeError(f"could not serve {name}")

    def close(self) -> None:
        self._models_thread.join(timeout=STARTUP_TIMEOUT_S)
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            process.stop()


@pytest.fixture(scope="session")
def mlflow_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="session")
def launcher(mlflow_workdir: Path) -> Iterator[Launcher]:
    started = Launcher(mlflow_workdir)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def mlflow_agent_server(launcher: Launcher) -> ConformanceServer:
    url = launcher.agent_server()
    return ConformanceServer("mlflow AgentServer", url, "/responses", "responses", True)


@pytest.fixture(scope="session")
def responses_model_server(launcher: Launcher) -> ConformanceServer:
    url = launcher.model_server("responses_model")
    return ConformanceServer(
        "mlflow models serve (ResponsesAgent)", url, "/invocations", "responses", False
    )


@pytest.fixture(scope="session")
def chat_model_server(launcher: Launcher) -> ConformanceServer:
    url = launcher.model_server("chat_model")
    return ConformanceServer(
        "mlflow models serve (ChatAgent)", url, "/invocations", "chat_agent", False
    )


# -- captures -------------------------------------------------------------------------------

CAPTURES = Path(__file__).parent / "captures"
UPDATE_SWITCH = "AGENTBATCH_UPDATE_CAPTURES"
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

    A capture must exist and still match what the server sends (modulo trace ids and stack-trace
    text); a missing one fails. `AGENTBATCH_UPDATE_CAPTURES=1` records them all (refused under CI).
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
        expect_saved(
            meta_path,
            json.dumps(meta, indent=2) + "\n",
            switch=UPDATE_SWITCH,
            comparable=json.loads,
            changed="the request, status or content type changed",
        )
        expect_saved(
            body_path,
            body,
            switch=UPDATE_SWITCH,
            comparable=_comparable,
            changed="the server's reply changed",
        )


def _comparable(text: str) -> str:
    """What must stay equal: everything but trace ids and stack-trace text (which follows the
    Python version's traceback format)."""
    text = _TRACE_ID.sub("tr-<id>", text)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(parsed, dict) and "stack_trace" in parsed:
        parsed["stack_trace"] = "<stack trace>"
        return json.dumps(parsed)
    return text


@pytest.fixture(scope="session")
def captures(mlflow_workdir: Path) -> Captures:
    return Captures(mlflow_workdir)


def exchange(
    server: Any,
    path: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Exchange:
    """Send one request with httpx and keep the answer's bytes as they came.

    `server` is a ConformanceServer or the package's own AgentServer (which has `url`).
    """
    import httpx

    base_url = server.base_url if isinstance(server, ConformanceServer) else server.url
    name = server.name if isinstance(server, ConformanceServer) else "agentbatch demo agent"

    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = httpx.request(
        method, base_url + path, content=content, headers=sent_headers, timeout=60
    )
    return Exchange(
        server=name,
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
