"""Apps accept OAuth tokens only: credentials for which `Config.oauth_token()` fails (PAT, the
`runtime` credentials of job compute, Azure Entra ID) are refused before any row; a service
principal read from a secret scope is used through databricks-sdk's oauth-m2m."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from databricks.sdk.core import Config

from agentbatch.agent.calls import CallSpec
from agentbatch.agent.endpoints import AppCredentials, use_app_credentials
from agentbatch.agent.ledger import Ledger
from agentbatch.errors import AgentError, ConfigError, UsageError
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.fake_workspace import non_oauth_credentials, serve_workspace
from agentbatch.testing.tokens import TokenAuthority

from .test_auth import CLIENT_ID, CLIENT_SECRET, PAT, clean_databricks_env, run  # noqa: F401

RUNTIME_TOKEN = "runtime-token-0123456789"
ENTRA_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-id-token"
SCOPE = "agentbatch"


@pytest.fixture
def authority() -> TokenAuthority:
    authority = TokenAuthority(clients={CLIENT_ID: CLIENT_SECRET}, pats={PAT: "someone"})
    authority.add_token(RUNTIME_TOKEN, "job-runner", "runtime")
    authority.add_token(ENTRA_TOKEN, "entra-user", "aad")
    return authority


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        yield ledger


@pytest.fixture(autouse=True)
def no_app_credentials() -> Iterator[None]:
    yield
    use_app_credentials(None)


def runtime(host: str) -> Config:
    return Config(host=host, credentials_strategy=non_oauth_credentials("runtime", RUNTIME_TOKEN))


def entra(host: str) -> Config:
    return Config(host=host, credentials_strategy=non_oauth_credentials("azure-cli", ENTRA_TOKEN))


def pat(host: str) -> Config:
    return Config(host=host, token=PAT)


@pytest.mark.parametrize(
    ("make", "kind"), [(runtime, "runtime"), (entra, "azure-cli"), (pat, "pat")]
)
async def test_non_oauth_credentials_are_refused_before_any_row(
    make: Any, kind: str, authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        # The workspace itself accepts them (the lookup would work) ...
        assert ws.authority.check_header(make(ws.url).authenticate()["Authorization"]).ok
        with pytest.raises(AgentError, match=rf"OAuth tokens only.*\({kind}\).*apps_secret_scope"):
            await run(CallSpec(endpoint="apps/triage"), 10, ledger, lambda: make(ws.url))
        assert agent.stats().requests_total == 0
        assert ws.stats().get("apps_get", 0) == 0


async def test_the_app_refuses_a_runtime_token_sent_anyway(authority: TokenAuthority) -> None:
    import httpx

    with serve_agent(authority=authority) as agent:
        reply = httpx.post(
            agent.url + "/responses",
            json={"input": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {RUNTIME_TOKEN}"},
        )
    assert reply.status_code == 401
    assert "only OAuth tokens" in reply.text


@pytest.mark.parametrize("make", [runtime, entra])
async def test_service_principal_from_secret_scope_calls_the_app(
    make: Any, authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        ws.put_secret(SCOPE, "client-id", CLIENT_ID)
        ws.put_secret(SCOPE, "client-secret", CLIENT_SECRET)
        use_app_credentials(AppCredentials.from_settings({"apps_secret_scope": SCOPE}))
        stats = await run(CallSpec(endpoint="apps/triage"), 20, ledger, lambda: make(ws.url))
        assert stats.ok == 20
        assert agent.stats().requests_total == 20
        assert ws.stats()["secrets_get"] == 2
        assert ws.stats()["token_requests"] >= 1


async def test_a_missing_secret_says_which(authority: TokenAuthority, ledger: Ledger) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        ws.put_secret(SCOPE, "client-id", CLIENT_ID)
        use_app_credentials(AppCredentials(SCOPE))
        with pytest.raises(ConfigError, match="secret 'client-secret' of scope 'agentbatch'"):
            await run(CallSpec(endpoint="apps/triage"), 5, ledger, lambda: runtime(ws.url))
        use_app_credentials(AppCredentials("other"))
        with pytest.raises(ConfigError, match="Scope other does not exist"):
            await run(CallSpec(endpoint="apps/triage"), 5, ledger, lambda: runtime(ws.url))
        assert agent.stats().requests_total == 0


async def test_a_wrong_secret_fails_before_any_row_without_echoing_it(
    authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        ws.put_secret(SCOPE, "client-id", CLIENT_ID)
        ws.put_secret(SCOPE, "client-secret", "not-the-secret-42")
        use_app_credentials(AppCredentials(SCOPE))
        with pytest.raises((ConfigError, AgentError)) as info:
            await run(CallSpec(endpoint="apps/triage"), 5, ledger, lambda: runtime(ws.url))
        assert "not-the-secret-42" not in str(info.value)
        assert agent.stats().requests_total == 0


def test_secret_scope_settings_are_checked() -> None:
    assert AppCredentials.from_settings({}) is None
    creds = AppCredentials.from_settings(
        {"apps_secret_scope": "s", "apps_client_id_key": "id", "apps_client_secret_key": "pw"}
    )
    assert creds == AppCredentials("s", "id", "pw")
    with pytest.raises(UsageError, match="apps_secret_scope"):
        AppCredentials.from_settings({"apps_secret_scope": "no spaces"})


def test_the_oidc_endpoint_refuses_unknown_scopes() -> None:
    """RFC 6749 section 5.2: a scope the server does not know is `invalid_scope`; the workspace
    grants `all-apis` (what databricks-sdk asks for) and the OpenID/SQL scopes, nothing else."""
    import httpx

    with serve_workspace() as ws:
        url = ws.url + "/oidc/v1/token"
        auth = ("demo-client", "demo-secret")
        ok = httpx.post(
            url, auth=auth, data={"grant_type": "client_credentials", "scope": "all-apis"}
        )
        assert ok.status_code == 200 and ok.json()["scope"] == "all-apis"
        for scope in ("all-apis everything", "admin", "unity-catalog:write"):
            refused = httpx.post(
                url, auth=auth, data={"grant_type": "client_credentials", "scope": scope}
            )
            assert refused.status_code == 400
            assert refused.json()["error"] == "invalid_scope"
        assert ws.authority.issued == 1
