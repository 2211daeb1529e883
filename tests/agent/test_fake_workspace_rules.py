"""The fake workspace refuses what Databricks refuses, and the product still works against it:
an unknown or expired token is 403 "Invalid access token." (and the run gets a fresh token), so is
one with 30 s or less left (and the run never sends one), the OIDC token endpoint takes only a
form with a grant type, app names are Databricks app names."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentbatch.agent.auth import AuthHeaders
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.fake_workspace import FakeApp, serve_workspace
from agentbatch.testing.tokens import TokenAuthority

from .test_auth import (  # noqa: F401 - clean_databricks_env is a fixture
    CLIENT_ID,
    CLIENT_SECRET,
    ExpireTokensAtStart,
    clean_databricks_env,
    oauth,
    run,
)


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority(clients={CLIENT_ID: CLIENT_SECRET}, pats={"dapi-known": "someone"})


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        yield ledger


def test_an_unknown_or_expired_token_is_403_invalid_access_token(
    authority: TokenAuthority,
) -> None:
    with serve_workspace({"triage": "http://127.0.0.1:9"}, authority=authority) as ws:
        url = ws.url + "/api/2.0/apps/triage"
        token = oauth(ws.url).authenticate()["Authorization"]
        assert httpx.get(url, headers={"Authorization": token}).status_code == 200
        authority.expire_all()
        for header in (token, "Bearer dapi-unknown"):
            refused = httpx.get(url, headers={"Authorization": header})
            assert refused.status_code == 403
            assert refused.json() == {"error_code": 403, "message": "Invalid access token."}
        # No credentials at all stays a 401.
        assert httpx.get(url).status_code == 401


@pytest.mark.parametrize("status", [401, 403])
async def test_a_token_expired_mid_run_is_refreshed_whichever_status_refuses_it(
    status: int, authority: TokenAuthority, ledger: Ledger
) -> None:
    with (
        serve_agent(authority=authority, invalid_token_status=status) as agent,
        serve_workspace({"triage": agent.url}, authority=authority) as ws,
    ):
        stats = await run(
            CallSpec(endpoint="apps/triage"),
            30,
            ledger,
            lambda: oauth(ws.url),
            progress=ExpireTokensAtStart(authority),
        )
        assert (stats.ok, stats.errors) == (30, 0)
        assert agent.stats().status_counts.get(status, 0) >= 1
        assert ws.stats()["token_requests"] == 2  # one refresh, shared by every refused row


def test_the_token_endpoint_takes_only_a_form_with_a_grant_type(
    authority: TokenAuthority,
) -> None:
    """RFC 6749 4.4.2 and 5.2; databricks-sdk posts a form (`requests.post(url, params)`) with
    HTTP Basic client credentials, which still gets a token."""
    with serve_workspace(authority=authority) as ws:
        url = ws.url + "/oidc/v1/token"
        auth = (CLIENT_ID, CLIENT_SECRET)
        fields = {"grant_type": "client_credentials", "scope": "all-apis"}
        assert httpx.post(url, auth=auth, data=fields).status_code == 200
        refused = [
            httpx.post(url, auth=auth, json=fields),
            httpx.post(url, auth=auth, files={k: (None, v) for k, v in fields.items()}),
            httpx.post(url, auth=auth, data={"scope": "all-apis"}),
        ]
        for reply in refused:
            assert reply.status_code == 400
            assert reply.json()["error"] == "invalid_request"
        other = httpx.post(url, auth=auth, data={**fields, "grant_type": "password"})
        assert other.json()["error"] == "unsupported_grant_type"
        assert ws.authority.issued == 1
        # The SDK's own request is such a form.
        assert oauth(ws.url).authenticate()["Authorization"].startswith("Bearer oauth-")
        assert ws.authority.issued == 2


@pytest.mark.parametrize("name", ["Triage", "triage_agent", "triage.agent", ""])
def test_an_app_name_databricks_refuses_cannot_be_registered(name: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters, digits and hyphens"):
        FakeApp(name, "http://127.0.0.1:9")
    assert FakeApp("triage-agent-2", "http://127.0.0.1:9").name == "triage-agent-2"


def test_a_token_with_30_seconds_or_less_left_is_refused(authority: TokenAuthority) -> None:
    """databricks-sdk `oauth.py` `Token.expired`: "Azure Databricks rejects tokens that expire in
    30 seconds or less"."""
    authority.add_token("oauth-ending", "someone", kind="oauth", ttl_s=30)
    authority.add_token("oauth-fine", "someone", kind="oauth", ttl_s=60)
    with serve_workspace(authority=authority) as ws:
        url = ws.url + "/api/2.0/preview/scim/v2/Me"
        ending = httpx.get(url, headers={"Authorization": "Bearer oauth-ending"})
        assert ending.status_code == 403
        assert ending.json() == {"error_code": 403, "message": "Invalid access token."}
        fine = httpx.get(url, headers={"Authorization": "Bearer oauth-fine"})
        assert fine.json()["userName"] == "someone"


@pytest.mark.slow
async def test_reused_headers_never_carry_a_token_with_30_seconds_or_less_left(
    authority: TokenAuthority,
) -> None:
    """Tokens live 41 s: the SDK hands one out for its first second (it refreshes 40 s before
    expiry), then the workspace refuses it 11 s after it was issued. A run re-reads its headers
    often enough that no call carries such a token (headers kept 30 s were refused after 11)."""
    authority.token_ttl_s = 41
    with serve_workspace(authority=authority) as ws:
        auth = AuthHeaders(oauth(ws.url))
        url = ws.url + "/api/2.0/preview/scim/v2/Me"
        statuses = []
        async with httpx.AsyncClient() as client:
            end = time.monotonic() + 13
            while time.monotonic() < end:
                headers, _ = await auth.get()
                statuses.append((await client.get(url, headers=dict(headers))).status_code)
                await asyncio.sleep(0.25)
        assert ws.stats().get("auth_refused", 0) == 0, statuses
        assert set(statuses) == {200}
        assert ws.authority.issued >= 2  # the loop outlived its first token
