"""Known credentials go through whole runs; then every surface is searched for them: logs (caplog at
DEBUG and a CLI's stderr with -v), progress output, summaries, error messages, rendered SQL, the
ledger (decoded), the output (decoded), every file the run left. They must appear nowhere.

Two flows: OAuth M2M for an app (client secret -> bearer token issued by the fake workspace) and
a personal access token for a Model Serving endpoint. Hostile agents echo the Authorization header
back in 400s, 500s, stream errors and a 401.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import agentbatch
from agentbatch.errors import AgentError
from agentbatch.spec.loader import load_job_text
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.fake_workspace import FakeWorkspace, serve_workspace
from agentbatch.testing.tokens import IssuedToken, TokenAuthority
from tests.support.databricks_env import auth_env, isolate
from tests.support.hostile_agent import ECHO_MODES, HostileAgent, serve_hostile

from .conftest import record_figures
from .processes import run_cli
from .secret_search import file_texts, forms, leaks

CLIENT_ID = "reliability-client"
CLIENT_SECRET = "rel-secret-" + secrets.token_hex(12)
PAT = "dapi" + secrets.token_hex(16)
ROWS = 30


class RecordingAuthority(TokenAuthority):
    """Remembers every OAuth token it issues, so the test can search for them too."""

    def __init__(self) -> None:
        super().__init__(clients={CLIENT_ID: CLIENT_SECRET}, pats={PAT: "pat-user"})
        self.issued_tokens: list[str] = []

    def issue(self, client_id: str) -> IssuedToken:
        token = super().issue(client_id)
        self.issued_tokens.append(token.access_token)
        return token


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def authority() -> RecordingAuthority:
    return RecordingAuthority()


@pytest.fixture
def agent(authority: RecordingAuthority) -> Iterator[AgentServer]:
    with serve_agent(authority=authority, accept_pat=False) as server:
        yield server


@pytest.fixture
def hostile() -> Iterator[tuple[str, HostileAgent]]:
    with serve_hostile() as served:
        yield served


@pytest.fixture
def workspace(
    authority: RecordingAuthority, agent: AgentServer, hostile: tuple[str, HostileAgent]
) -> Iterator[FakeWorkspace]:
    with serve_workspace({"sec-app": agent.url, "echo-app": hostile[0]}, authority=authority) as ws:
        yield ws


def job_text(endpoint: str, stream: bool = False) -> str:
    return f"""
name: secrets_{endpoint.replace("/", "_").replace("-", "_")}
source: {{table: main.s.rows, key: id, columns: [body]}}
request: "body"
agent:
  endpoint: {endpoint}
  timeout_seconds: 5
  max_retries: 1
  stream: {"true" if stream else "false"}
  databricks_options: {{return_trace: true}}
output: {{table: main.s.out_{endpoint.replace("/", "_").replace("-", "_")}, mode: merge}}
"""


def rows_table(bodies: list[str]) -> pa.Table:
    return pa.table({"id": list(range(len(bodies))), "body": bodies})


def run_api(
    tmp_path: Path, endpoint: str, bodies: list[str], **kwargs: Any
) -> agentbatch.RunResult:
    out = tmp_path / "project" / f"out_{endpoint.replace('/', '_')}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = f"main.s.out_{endpoint.replace('/', '_').replace('-', '_')}"
    return agentbatch.run(
        load_job_text(job_text(endpoint, kwargs.pop("stream", False)), "secrets.yml"),
        tables={"main.s.rows": rows_table(bodies), table: out},
        project_dir=tmp_path / "project",
        state_dir=tmp_path / "project" / "state",
        **kwargs,
    )


def test_oauth_client_secret_and_tokens_leak_nowhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    authority: RecordingAuthority,
    workspace: FakeWorkspace,
    agent: AgentServer,
    hostile: tuple[str, HostileAgent],
) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
    places: dict[str, Any] = {}
    with caplog.at_level(logging.DEBUG):
        bodies = [f"ticket {i}: refund please" for i in range(ROWS)] + ["PERMANENT_ERROR x"]
        good = run_api(tmp_path, "apps/sec-app", bodies, progress=True)
        places["summary (ok run)"] = json.dumps(good.summary, default=str)
        places["rows (ok run)"] = good.to_pandas().to_dict("records")
        assert good.summary["ok"] == ROWS and good.summary["errors"] == 1
        for stream in (False, True):
            echo = run_api(
                tmp_path,
                "apps/echo-app",
                list(ECHO_MODES),
                progress=False,
                stream=stream,
                retry_errors=True,  # the streamed run re-sends the rows the first one failed
            )
            rows = echo.to_pandas().to_dict("records")
            places[f"rows (echo, stream={stream})"] = rows
            assert len(rows) == len(ECHO_MODES)
            assert all(r["error"] for r in rows), rows  # every echo is a row error...
            assert all("***" in r["error"] for r in rows), rows  # ...with the echo masked
        assert hostile[1].seen["ECHO_AUTH_400"] >= 2  # ...and the agent did get the token
        with pytest.raises(AgentError) as refused:
            run_api(tmp_path, "apps/echo-app", ["ECHO_AUTH_401"], progress=False)
        places["AgentError after 401"] = str(refused.value)
        places["rendered SQL"] = agentbatch.render(
            load_job_text(job_text("apps/sec-app"), "secrets.yml"), "local"
        )
    sent = {h.get("Authorization", "") for h in hostile[1].headers}
    assert any(t in h for t in authority.issued_tokens for h in sent), "no token reached the agent"
    places["log records"] = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    captured = capfd.readouterr()
    places["stdout"], places["stderr (progress)"] = captured.out, captured.err
    places.update(file_texts(tmp_path / "project"))
    secrets_ = [*forms(CLIENT_SECRET, CLIENT_ID), *authority.issued_tokens]
    assert len(authority.issued_tokens) >= 1
    found = leaks(secrets_, places)
    record_figures(
        "secrets (oauth)",
        {
            "places_searched": len(places),
            "tokens_issued": len(authority.issued_tokens),
            "found": len(found),
        },
    )
    assert not found, found


def test_personal_access_token_leaks_nowhere_through_the_cli(
    tmp_path: Path, authority: RecordingAuthority, hostile: tuple[str, HostileAgent]
) -> None:
    with serve_agent(authority=authority, accept_pat=True) as serving:
        project = tmp_path / "project"
        (project / "jobs").mkdir(parents=True)
        job = project / "jobs" / "pat.yml"
        job.write_text(job_text("sec-endpoint").replace("main.s.out_sec_endpoint", "main.s.out"))
        rows = project / "rows.csv"
        rows.write_text("id,body\n" + "".join(f"{i},question {i}\n" for i in range(ROWS)))
        env = {"HOME": str(tmp_path), **auth_env(tmp_path, host=serving.url, token=PAT)}
        args = [
            "-v",
            "run",
            str(job),
            "--table",
            f"main.s.rows={rows}",
            "--table",
            f"main.s.out={project / 'out.parquet'}",
            "--state-dir",
            str(project / "state"),
            "--json",
        ]
        done = run_cli(args, cwd=project, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)["summary"]["ok"] == ROWS
        assert serving.stats().requests_total == ROWS  # the PAT was accepted: it was sent
        # A PAT for an app is refused before any row is sent; the refusal must not quote it.
        with serve_workspace({"sec-app": hostile[0]}, authority=authority) as ws:
            app_job = project / "jobs" / "app.yml"
            app_job.write_text(job_text("apps/sec-app"))
            refused = run_cli(
                ["-v", "run", str(app_job), "--table", f"main.s.rows={rows}"],
                cwd=project,
                env={**env, "DATABRICKS_HOST": ws.url},
            )
        assert refused.returncode == 6, refused.stderr[-2000:]
        rendered = run_cli(["render", str(job)], cwd=project, env=env)
        plan = run_cli(["plan", str(job)], cwd=project, env=env)
    places: dict[str, Any] = {
        "run stdout": done.stdout,
        "run stderr (-v)": done.stderr,
        "refused stderr (-v)": refused.stderr,
        "render": rendered.stdout + rendered.stderr,
        "plan": plan.stdout + plan.stderr,
    }
    places.update(file_texts(project))
    found = leaks(forms(PAT), places)
    record_figures("secrets (PAT, CLI)", {"places_searched": len(places), "found": len(found)})
    assert not found, found
