"""The probe before the first row: a dead agent URL stops the run in seconds, a busy one does not."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from aiohttp import web

from agentbatch.agent import probe
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.probe import probe_call, probe_url
from agentbatch.errors import AgentError
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.background import BackgroundServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status_app(status: int, seen: list[str], *, delay_s: float = 0.0) -> web.Application:
    async def reply(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        await asyncio.sleep(delay_s)
        return web.Response(status=status, headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_route("*", "/responses", reply)
    return app


class StatusServer(NamedTuple):
    """A server answering `status` (after a delay), and the requests it received."""

    url: str
    status: int
    seen: list[str]


@pytest.fixture
def status_server(request: pytest.FixtureRequest) -> Iterator[StatusServer]:
    status, delay = request.param
    seen: list[str] = []
    with BackgroundServer(lambda: _status_app(status, seen, delay_s=delay)) as server:
        yield StatusServer(server.url, status, seen)


def test_a_live_demo_agent_passes_without_a_paid_call() -> None:
    with serve_agent() as agent:
        probe_url(agent.url + "/responses")
        assert agent.stats().requests_total == 0


@pytest.mark.parametrize("status_server", [(429, 0.0), (503, 0.0), (500, 0.0)], indirect=True)
def test_busy_or_failing_servers_are_alive(
    status_server: StatusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=probe.__name__)
    probe_url(status_server.url + "/responses")  # returns: the run goes on
    # It did reach the server (one bodiless GET), read the status and took it as alive.
    assert status_server.seen == ["GET /responses"]
    assert f"answered {status_server.status}: alive" in caplog.text


@pytest.mark.parametrize("status_server", [(200, 3.0)], indirect=True)
def test_a_slow_server_is_alive(
    status_server: StatusServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(probe, "READ_TIMEOUT_S", 0.5)
    caplog.set_level(logging.DEBUG, logger=probe.__name__)
    started = time.monotonic()
    probe_url(status_server.url + "/responses")  # returns: the run goes on
    # It stopped waiting after READ_TIMEOUT_S, not after the server's 3 s.
    assert time.monotonic() - started < 2.5
    assert status_server.seen == ["GET /responses"]
    assert "slow to answer; going on" in caplog.text


def test_connection_refused_names_the_cause() -> None:
    port = _free_port()
    with pytest.raises(AgentError, match=rf"connection refused .*port {port}"):
        probe_url(f"http://127.0.0.1:{port}/responses", name="apps/triage-agent")


def test_a_missing_route_is_a_404() -> None:
    with serve_agent() as agent, pytest.raises(AgentError, match=r"404 Not Found.*/nowhere"):
        probe_url(agent.url + "/nowhere")


def _express_like_app(seen: list[str]) -> web.Application:
    """A POST-only route as Express serves it: `404 Cannot GET /x` to a GET, the route's
    methods to an OPTIONS, 404 to both where no route is."""

    async def reply(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        if request.path != "/agent/responses":
            return web.Response(status=404, text=f"Cannot {request.method} {request.path}")
        if request.method == "OPTIONS":
            return web.Response(status=200, text="POST", headers={"Allow": "POST"})
        if request.method == "GET":
            return web.Response(status=404, text=f"Cannot GET {request.path}")
        return web.json_response({"output": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", reply)
    return app


def test_an_express_style_agent_is_alive_and_a_wrong_path_on_it_is_not() -> None:
    """Express answers a GET on a POST-only route 404: the probe asks OPTIONS before it stops a
    run (it stopped every run against such an agent, exit 6)."""
    seen: list[str] = []
    with BackgroundServer(lambda: _express_like_app(seen)) as server:
        probe_url(server.url + "/agent/responses")
        with pytest.raises(AgentError, match=r"404 Not Found.*/agnet/responses"):
            probe_url(server.url + "/agnet/responses")
    assert seen == [
        "GET /agent/responses",
        "OPTIONS /agent/responses",
        "GET /agnet/responses",
        "OPTIONS /agnet/responses",
    ]


def test_tls_to_a_plain_http_server_fails() -> None:
    with serve_agent() as agent, pytest.raises(AgentError, match="TLS failed"):
        probe_url(agent.url.replace("http://", "https://") + "/responses")


def test_a_host_that_does_not_resolve() -> None:
    def no_such_host(parts: object, timeout: float) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(AgentError, match=r"'agent\.invalid' does not resolve"):
        probe_url("http://agent.invalid/responses", connect=no_such_host)  # type: ignore[arg-type]


def test_credentials_in_the_url_are_not_echoed() -> None:
    port = _free_port()
    with pytest.raises(AgentError) as caught:
        probe_url(f"http://user:s3cret@127.0.0.1:{port}/responses")
    assert "s3cret" not in str(caught.value)


def test_probe_call_follows_the_endpoint_override_and_skips_workspace_endpoints() -> None:
    port = _free_port()
    call = CallSpec(endpoint="apps/triage-agent")
    with pytest.raises(AgentError, match=f"127.0.0.1:{port}/responses"):
        probe_call(call, {"apps/triage-agent": f"http://127.0.0.1:{port}"})
    probe_call(call, {})  # resolved with workspace credentials by the run, not probed
    probe_call(CallSpec(endpoint="builtin:instant"), {})
    probe_call(CallSpec(endpoint=f"https://x{port}.aws.databricksapps.com"), {})


def test_a_dead_endpoint_fails_the_run_fast_and_writes_nothing(tmp_path: Path) -> None:
    import agentbatch

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out.parquet"
    with pytest.raises(AgentError, match="connection refused"):
        agentbatch.run(
            root / "jobs" / "ticket_triage.yml",
            tables={
                "main.support.tickets": root / "agentbatch" / "data" / "support_tickets.csv",
                "main.support.ticket_triage": out,
            },
            endpoints={"apps/triage-agent": f"http://127.0.0.1:{_free_port()}"},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            progress=False,
        )
    assert not out.exists()
