"""Endpoint resolution and auth against the loopback fake workspace: app lookup, OAuth only for
apps, 401 refresh once, 403/404 causes, and no secret ever in logs, errors or the ledger."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiohttp import web
from databricks.sdk.core import Config

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.endpoints import resolve_endpoint
from agentbatch.agent.ledger import Ledger
from agentbatch.agent.limiter import INITIAL_LIMIT
from agentbatch.errors import AgentError, ConfigError, UsageError
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.background import BackgroundServer
from agentbatch.testing.fake_workspace import FakeApp, serve_workspace
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.tokens import Check, TokenAuthority
from tests.support.databricks_env import isolate

from .conftest import input_batches

CLIENT_ID, CLIENT_SECRET, PAT = (
    "batch-client",
    "batch-secret-value-123",
    "dapi0123456789abcdef0123456789abcdef",
)


@pytest.fixture(autouse=True)
def clean_databricks_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient credentials or profiles: each test builds its own Config."""
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority(clients={CLIENT_ID: CLIENT_SECRET}, pats={PAT: "someone"})


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        yield ledger


def oauth(host: str) -> Config:
    return Config(
        host=host, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, auth_type="oauth-m2m"
    )


# Calls a run refused for good sends before it stops, in limiter windows: the first window
# (refused), its calls again with the fresh token (refused: the run stops), and rows that started
# in the slots the refusals freed before the stop reached every worker. The last is a matter of
# scheduling: on a loaded machine one more than three windows was seen (49 for 48).
WINDOWS = 4


def pat(host: str) -> Config:
    return Config(host=host, token=PAT)


async def run(spec: CallSpec, n: int, ledger: Ledger, factory: Any, **kwargs: Any) -> Any:
    requests = [f"question {i}" for i in range(n)]
    return await run_bulk(
        input_batches(spec, requests),
        call=spec,
        key="id",
        ledger=ledger,
        config_factory=factory,
        **kwargs,
    )


async def test_app_is_looked_up_once_and_called_with_oauth(
    authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        stats = await run(CallSpec(endpoint="apps/triage"), 40, ledger, lambda: oauth(ws.url))
        assert stats.ok == 40
        assert ws.stats()["apps_get"] == 1
        assert ws.stats()["token_requests"] == 1
        assert agent.stats().requests_total == 40


async def test_a_personal_access_token_is_refused_for_apps_before_any_row(
    authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        with pytest.raises(AgentError, match="OAuth tokens only") as info:
            await run(CallSpec(endpoint="apps/triage"), 10, ledger, lambda: pat(ws.url))
        assert agent.stats().requests_total == 0
    assert PAT not in str(info.value)


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (None, "was not found"),
        (FakeApp("triage", "http://127.0.0.1:9", compute_state="STOPPED"), "compute is STOPPED"),
        (FakeApp("triage", "http://127.0.0.1:9", app_state="CRASHED"), "is CRASHED"),
        (FakeApp("triage", ""), "has no URL"),
    ],
)
async def test_unusable_apps_fail_before_any_row(
    app: FakeApp | None, message: str, authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_workspace([app] if app else [], authority=authority) as ws,
        pytest.raises(AgentError, match=message),
    ):
        await run(CallSpec(endpoint="apps/triage"), 5, ledger, lambda: oauth(ws.url))


class ExpireTokensAtStart:
    """A progress reporter that revokes every token once the endpoint is resolved."""

    def __init__(self, authority: TokenAuthority) -> None:
        self.authority = authority

    def start(self, total: int | None) -> None:
        self.authority.expire_all()

    def update(self, stats: Any) -> None:
        pass

    def finish(self, stats: Any) -> None:
        pass


async def test_an_expired_token_is_refreshed_once(
    authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        stats = await run(
            CallSpec(endpoint="apps/triage"),
            30,
            ledger,
            lambda: oauth(ws.url),
            progress=ExpireTokensAtStart(authority),
        )
        assert stats.ok == 30
        assert ws.stats()["token_requests"] == 2  # one refresh, shared by every row that saw 401
        assert agent.stats().status_counts.get(401, 0) >= 1


class RotatingAuthority(TokenAuthority):
    """A workspace rotating credentials under a long run: every OAuth token is revoked each
    time `every` more agent calls were let through (counted by the server, so the rotations
    fall among the calls however the client groups its commits)."""

    def __init__(self, every: int) -> None:
        super().__init__(clients={CLIENT_ID: CLIENT_SECRET}, pats={PAT: "someone"})
        self.every = every
        self.accepted = 0
        self.rotations = 0

    def check_header(self, authorization: str | None, *, accept_pat: bool = True) -> Check:
        check = super().check_header(authorization, accept_pat=accept_pat)
        if check.verdict == "ok" and authorization and "oauth-" in authorization:
            with self._lock:
                self.accepted += 1
                rotate = self.accepted % self.every == 0
            if rotate:
                self.rotations += 1
                self.expire_all()
        return check


async def test_tokens_rotated_again_and_again_never_stop_the_run(ledger: Ledger) -> None:
    # Each rotation is a fresh generation: a row that refreshed once before is refreshed again.
    authority = RotatingAuthority(every=150)
    with (
        serve_agent(FaultConfig(latency_ms=20, jitter_ms=20), authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        stats = await run(
            CallSpec(endpoint="apps/triage", max_concurrency=64), 600, ledger, lambda: oauth(ws.url)
        )
        assert (stats.ok, stats.errors) == (600, 0)
        # Rotations while rows were still to send: each one is refused at least once.
        assert authority.rotations >= 3
        refused = agent.stats().status_counts.get(401, 0)
        assert refused >= authority.rotations - 1
        # One new token per rotation, however many calls saw the 401.
        assert ws.stats()["token_requests"] <= 1 + authority.rotations


async def test_an_expired_token_during_app_lookup_is_refreshed(
    authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        config = oauth(ws.url)
        config.authenticate()  # the SDK now holds a token...
        authority.expire_all()  # ...which the workspace no longer accepts
        stats = await run(CallSpec(endpoint="apps/triage"), 5, ledger, lambda: config)
        assert stats.ok == 5
        assert ws.stats()["token_requests"] == 2


async def test_a_token_refused_after_refresh_stops_the_run(
    authority: TokenAuthority, ledger: Ledger
) -> None:
    stranger = TokenAuthority(clients={})  # the agent trusts nobody the workspace knows
    with (
        serve_agent(authority=stranger) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        with pytest.raises(AgentError, match="HTTP 401"):
            await run(CallSpec(endpoint="apps/triage"), 200, ledger, lambda: oauth(ws.url))
        # A few windows of calls at most (WINDOWS): the run stops at the first refusal after
        # the refresh, not after asking every row.
        assert agent.stats().requests_total <= WINDOWS * INITIAL_LIMIT
    assert ledger.stats()["answers"] == 0


class ForbidsEveryone(TokenAuthority):
    """An app that recognises the workspace's tokens and refuses every principal (403)."""

    def __init__(self, workspace: TokenAuthority) -> None:
        super().__init__(clients={}, pats={})
        self.workspace = workspace

    def check_header(self, authorization: str | None, *, accept_pat: bool = True) -> Check:
        check = self.workspace.check_header(authorization, accept_pat=accept_pat)
        return Check("forbidden", check.principal) if check.ok else check


async def test_no_permission_names_the_cause(authority: TokenAuthority, ledger: Ledger) -> None:
    with serve_workspace([], authority=authority) as ws:
        config = oauth(ws.url)
        # The app knows every token of the workspace (a fresh one too) but lets none in.
        app_authority = ForbidsEveryone(authority)
        with serve_agent(authority=app_authority, accept_pat=True) as agent:
            ws.add_app("triage", agent.url)
            with pytest.raises(AgentError, match="no CAN USE permission on app 'triage'"):
                await run(CallSpec(endpoint="apps/triage"), 100, ledger, lambda: config)
            # A few windows of calls at most (WINDOWS): a 403 gets one fresh token (Databricks
            # answers an expired token 403 too), refused again, and the run stops.
            assert agent.stats().requests_total <= WINDOWS * INITIAL_LIMIT


async def test_serving_endpoints_accept_a_pat(authority: TokenAuthority, ledger: Ledger) -> None:
    # Model Serving lives on the workspace host: here the agent server plays the workspace.
    with serve_agent(authority=authority, accept_pat=True) as agent:
        stats = await run(CallSpec(endpoint="triage-model"), 10, ledger, lambda: pat(agent.url))
        assert stats.ok == 10
        assert agent.stats().requests_total == 10


async def test_openai_compatible_routes_send_the_model(
    authority: TokenAuthority, ledger: Ledger
) -> None:
    with serve_agent(
        authority=authority, accept_pat=True, known_endpoints=frozenset({"m1"})
    ) as agent:
        stats = await run(
            CallSpec(endpoint="openai/m1", api="chat"), 5, ledger, lambda: pat(agent.url)
        )
        assert stats.ok == 5
        with pytest.raises(AgentError, match="HTTP 404"):
            await run(CallSpec(endpoint="openai/unknown"), 5, ledger, lambda: pat(agent.url))


@pytest.fixture
def workspace_url(authority: TokenAuthority) -> Iterator[str]:
    with serve_workspace([], authority=authority) as ws:
        yield ws.url


def test_resolution_forms(workspace_url: str) -> None:
    def no_config() -> Config:
        raise AssertionError("plain URLs and builtin must not read the workspace config")

    url = resolve_endpoint("http://127.0.0.1:8000/", api="responses", config_factory=no_config)
    assert (url.kind, url.url, url.auth) == ("url", "http://127.0.0.1:8000/responses", None)
    assert (
        resolve_endpoint("http://h", api="chat", config_factory=no_config).url
        == "http://h/invocations"
    )
    chat = resolve_endpoint("http://h/chat/completions", api="chat", config_factory=no_config)
    assert chat.url == "http://h/chat/completions"
    trace = resolve_endpoint(
        "http://h",
        api="responses",
        databricks_options={"return_trace": True},
        config_factory=no_config,
    )
    assert trace.headers == {"x-mlflow-return-trace-id": "true"}
    assert (
        resolve_endpoint("builtin:instant", api="chat", config_factory=no_config).kind == "builtin"
    )
    over = resolve_endpoint(
        "apps/x", api="responses", overrides={"apps/x": "http://o"}, config_factory=no_config
    )
    assert over.url == "http://o/responses"
    routed = resolve_endpoint(
        "openai/m",
        api="chat",
        overrides={"openai/m": "http://o/serving-endpoints/chat/completions"},
        config_factory=no_config,
    )
    assert (routed.url, routed.model) == ("http://o/serving-endpoints/chat/completions", "m")
    serving = resolve_endpoint(
        "my-model", api="responses", config_factory=lambda: pat(workspace_url)
    )
    assert serving.url == f"{workspace_url}/serving-endpoints/my-model/invocations"
    assert serving.auth is not None
    openai = resolve_endpoint(
        "openai/m", api="responses", config_factory=lambda: pat(workspace_url)
    )
    assert (openai.url, openai.model) == (f"{workspace_url}/serving-endpoints/responses", "m")


@pytest.mark.parametrize("endpoint", ["has spaces", "apps/", "a/b/c", "openai/"])
def test_unrecognised_endpoints_are_usage_errors(endpoint: str, workspace_url: str) -> None:
    with pytest.raises(UsageError):
        resolve_endpoint(endpoint, api="responses", config_factory=lambda: pat(workspace_url))


def test_bad_overrides_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="override"):
        resolve_endpoint("x", api="responses", overrides={"x": "ftp://nope"})


def test_missing_workspace_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not configured"):
        resolve_endpoint("my-model", api="responses")


@pytest.mark.parametrize(
    "endpoint", ["apps/review-agent", "my-model", "serving-endpoints/my-model", "openai/m"]
)
def test_without_workspace_auth_the_error_says_how_to_use_a_local_agent(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A job's Databricks name with no workspace auth (a newcomer's first run): the error names
    the `--endpoint` mapping that sends its rows to a local agent, and never the token."""
    token = "dapi0123456789abcdef0123456789ab"
    isolate(monkeypatch, tmp_path, token=token)  # a token, but no host: not configured
    with pytest.raises(ConfigError) as raised:
        resolve_endpoint(endpoint, api="responses")
    message = str(raised.value)
    assert message.startswith("Databricks authentication is not configured: ")
    assert f"--endpoint {endpoint}=http://127.0.0.1:8000" in message
    assert token not in message and "\n" not in message


# --- secrets ---------------------------------------------------------------------------------


def echo_auth_app() -> web.Application:
    """A hostile agent that echoes the request's Authorization header in its errors."""

    async def handler(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        text = await request.text()
        status = 400 if "bad" in text else 500 if "flaky" in text else 200
        if status == 200:
            return web.json_response(
                {
                    "output": [
                        {
                            "type": "message",
                            "content": [{"type": "output_text", "text": f"you sent {header}"}],
                        }
                    ]
                }
            )
        return web.json_response({"message": f"rejected credentials {header}"}, status=status)

    app = web.Application()
    app.router.add_post("/serving-endpoints/{name}/invocations", handler)
    return app


async def test_tokens_never_reach_logs_errors_or_the_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = BackgroundServer(echo_auth_app, name="echo-auth")
    server.start()
    try:
        spec = CallSpec(endpoint="leaky", max_retries=1)
        requests = ["bad request", "flaky request", "fine"]
        with caplog.at_level(logging.DEBUG), Ledger(tmp_path / "l.sqlite", key="id") as ledger:
            await run_bulk(
                input_batches(spec, requests),
                call=spec,
                key="id",
                ledger=ledger,
                config_factory=lambda: pat(server.url),
            )
            rows = pa.Table.from_batches(list(ledger.rows_of_run())).to_pylist()
    finally:
        server.stop()
    errors = [r["error"] for r in rows if r["error"]]
    assert len(errors) == 2 and all("***" in e for e in errors)
    for text in [caplog.text, *map(str, rows)]:
        assert PAT not in text
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("l.sqlite*"))
    assert PAT.encode() not in raw


def trace_echo_app() -> web.Application:
    """An agent that puts the request's Authorization header into its MLflow trace id."""

    async def handler(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        trace = {"trace": {"info": {"trace_id": f"tr-{header}"}}}
        return web.json_response({"predictions": ["fine"], "databricks_output": trace})

    app = web.Application()
    app.router.add_post("/serving-endpoints/{name}/invocations", handler)
    return app


async def test_a_token_echoed_into_the_trace_id_never_reaches_the_ledger(tmp_path: Path) -> None:
    with (
        BackgroundServer(trace_echo_app, name="trace-echo") as server,
        Ledger(tmp_path / "l.sqlite", key="id") as ledger,
    ):
        await run(CallSpec(endpoint="leaky"), 2, ledger, lambda: pat(server.url))
        rows = pa.Table.from_batches(list(ledger.rows_of_run())).to_pylist()
    assert [r["response"] for r in rows] == ["fine", "fine"]
    assert [r["trace_id"] for r in rows] == ["tr-***"] * 2
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("l.sqlite*"))
    assert PAT.encode() not in raw
