"""The unmodified databricks-sdk against the fake workspace, and the agent checking its tokens."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.errors import NotFound, PermissionDenied

from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.fake_workspace import FakeApp, serve_workspace
from agentbatch.testing.tokens import TokenAuthority

MakeAgent = Callable[..., AgentServer]
CLIENT = {"client_id": "demo-client", "client_secret": "demo-secret"}


def test_oauth_m2m_app_lookup(agent: AgentServer) -> None:
    with serve_workspace({"triage-agent": agent.url}) as ws:
        w = WorkspaceClient(host=ws.url, **CLIENT)
        assert w.config.auth_type == "oauth-m2m"
        app = w.apps.get("triage-agent")
        assert app.url == agent.url
        assert app.compute_status is not None and app.compute_status.state is not None
        assert app.compute_status.state.value == "ACTIVE"
        assert app.app_status is not None and app.app_status.state is not None
        assert app.app_status.state.value == "RUNNING"
        with pytest.raises(NotFound, match="App with name missing does not exist"):
            w.apps.get("missing")
        stats = ws.stats()
    assert stats["tokens_issued"] >= 1
    assert stats["apps_get"] == 2
    assert stats["host_metadata"] >= 1 and stats["oidc_discovery"] >= 1


def test_config_authenticate_yields_an_issued_bearer_token() -> None:
    with serve_workspace() as ws:
        headers = Config(host=ws.url, **CLIENT).authenticate()
        assert headers["Authorization"].startswith("Bearer oauth-")
        assert ws.authority.check_header(headers["Authorization"]).ok


def test_wrong_secret_is_refused() -> None:
    with serve_workspace() as ws, pytest.raises(ValueError, match="invalid_client"):
        Config(host=ws.url, client_id="demo-client", client_secret="wrong").authenticate()
    assert ws.stats()["token_refused"] >= 1


def test_pat_config() -> None:
    with serve_workspace(authority=TokenAuthority(pats={"dapi-abc": "alice"})) as ws:
        config = Config(host=ws.url, token="dapi-abc")
        assert config.auth_type == "pat"
        assert config.authenticate() == {"Authorization": "Bearer dapi-abc"}
        me = WorkspaceClient(host=ws.url, token="dapi-abc").current_user.me()
        assert me.user_name == "alice"
        # Databricks answers an unknown token 403 "Invalid access token." (not 401).
        with pytest.raises(PermissionDenied, match="Invalid access token"):
            WorkspaceClient(host=ws.url, token="dapi-unknown").current_user.me()
        assert ws.stats()["tokens_issued"] == 0


def test_apps_can_change_while_running() -> None:
    with serve_workspace([FakeApp("a", "http://127.0.0.1:1", compute_state="STOPPED")]) as ws:
        w = WorkspaceClient(host=ws.url, token="dapi-demo")
        state = w.apps.get("a").compute_status
        assert state is not None and state.state is not None
        assert state.state.value == "STOPPED"
        ws.add_app("b", "http://127.0.0.1:2")
        assert w.apps.get("b").url == "http://127.0.0.1:2"
        ws.remove_app("a")
        with pytest.raises(NotFound):
            w.apps.get("a")


def test_short_lived_tokens_are_reissued() -> None:
    with serve_workspace(authority=TokenAuthority(token_ttl_s=0)) as ws:
        config = Config(host=ws.url, **CLIENT)
        before = ws.authority.issued
        for _ in range(3):
            config.authenticate()
        assert ws.authority.issued >= before + 3


def test_agent_checks_workspace_tokens(make_agent: MakeAgent) -> None:
    authority = TokenAuthority(pats={"dapi-demo": "demo-user"})
    authority.add_client("blocked-client", "s3cret")
    authority.forbid("blocked-client")
    agent = make_agent(authority=authority)
    url = f"{agent.url}/responses"
    with serve_workspace(authority=authority) as ws:
        good = Config(host=ws.url, **CLIENT).authenticate()
        blocked = Config(
            host=ws.url, client_id="blocked-client", client_secret="s3cret"
        ).authenticate()

        def status(headers: dict[str, str]) -> int:
            return httpx.post(url, json={"input": "x"}, headers=headers).status_code

        assert status(good) == 200
        assert status({}) == 401
        assert status({"Authorization": "Bearer nope"}) == 401
        assert status({"Authorization": "Bearer dapi-demo"}) == 401  # Apps refuse PATs
        assert status(blocked) == 403
        authority.expire_all()
        refused = httpx.post(url, json={"input": "x"}, headers=good)
        assert refused.status_code == 401
        assert refused.json()["message"] == "access token expired"
        assert good["Authorization"].split()[1] not in refused.text
    assert agent.stats().faults == {"auth": 5}


def test_agent_can_accept_pats(make_agent: MakeAgent) -> None:
    agent = make_agent(authority=TokenAuthority(), accept_pat=True)
    headers = {"Authorization": "Bearer dapi-demo"}
    assert httpx.post(f"{agent.url}/responses", json={"input": "x"}, headers=headers).is_success
