"""Who may call: OAuth clients, the tokens issued to them, personal access tokens.

Shared by the fake workspace (which issues and checks tokens) and the agent server (which
checks them like the Databricks Apps proxy does). Thread-safe: both servers run their own loop.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["ok", "missing", "unknown", "expired", "forbidden", "pat_refused"]
# oauth: issued by the workspace's OIDC endpoint; pat: personal access token; runtime: the token
# Databricks compute hands its processes (databricks-sdk's `runtime` credentials); aad: an Azure
# Entra ID token. Databricks Apps accept only the first kind (Databricks docs:
# dev-tools/databricks-apps/connect-local).
TokenKind = Literal["oauth", "pat", "runtime", "aad"]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    principal: str
    expires_at: float
    kind: TokenKind


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    principal: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


class TokenAuthority:
    """Issues short-lived OAuth tokens to known clients and recognises PATs.

    `clients` maps client id -> secret; `pats` maps a personal access token -> its principal;
    calls by a principal in `forbidden` are refused with 403.

    A token with `min_remaining_s` or less left is refused as expired: "Azure Databricks rejects
    tokens that expire in 30 seconds or less" (databricks-sdk `oauth.py` `Token.expired`, which
    therefore refreshes 40 s before expiry). Tests of short-lived tokens (a second) pass 0.
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str] | None = None,
        pats: Mapping[str, str] | None = None,
        forbidden: Iterable[str] = (),
        token_ttl_s: float = 3600.0,
        min_remaining_s: float = 30.0,
    ) -> None:
        self._lock = threading.Lock()
        self._clients = dict(clients if clients is not None else {"demo-client": "demo-secret"})
        self._tokens: dict[str, IssuedToken] = {}
        for token, principal in (pats if pats is not None else {"dapi-demo": "demo-user"}).items():
            self._tokens[token] = IssuedToken(token, principal, float("inf"), "pat")
        self._forbidden = set(forbidden)
        self.token_ttl_s = token_ttl_s
        self.min_remaining_s = min_remaining_s
        self.issued = 0

    def add_client(self, client_id: str, secret: str) -> None:
        with self._lock:
            self._clients[client_id] = secret

    def add_token(
        self, token: str, principal: str, kind: TokenKind, *, ttl_s: float = float("inf")
    ) -> None:
        """A token the workspace accepts that was not issued by its OIDC endpoint."""
        with self._lock:
            self._tokens[token] = IssuedToken(token, principal, time.monotonic() + ttl_s, kind)

    def forbid(self, principal: str) -> None:
        with self._lock:
            self._forbidden.add(principal)

    def client_ok(self, client_id: str, secret: str) -> bool:
        with self._lock:
            known = self._clients.get(client_id)
        return known is not None and secrets.compare_digest(known, secret)

    def issue(self, client_id: str) -> IssuedToken:
        token = IssuedToken(
            access_token="oauth-" + secrets.token_urlsafe(24),
            principal=client_id,
            expires_at=time.monotonic() + self.token_ttl_s,
            kind="oauth",
        )
        with self._lock:
            self._tokens[token.access_token] = token
            self.issued += 1
        return token

    def expire_all(self) -> None:
        """Make every OAuth token issued so far expired (PATs stay valid)."""
        now = time.monotonic()
        with self._lock:
            for value, token in list(self._tokens.items()):
                if token.kind == "oauth":
                    self._tokens[value] = IssuedToken(value, token.principal, now - 1, "oauth")

    def check_header(self, authorization: str | None, *, accept_pat: bool = True) -> Check:
        """Judge an `Authorization` header value."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return Check("missing")
        value = authorization[len("bearer ") :].strip()
        with self._lock:
            token = self._tokens.get(value)
            forbidden = token is not None and token.principal in self._forbidden
        if token is None:
            return Check("unknown")
        if token.expires_at - self.min_remaining_s <= time.monotonic():
            return Check("expired", token.principal)
        if token.kind != "oauth" and not accept_pat:
            return Check("pat_refused", token.principal)
        if forbidden:
            return Check("forbidden", token.principal)
        return Check("ok", token.principal)


# What Databricks answers a bearer token it does not accept (unknown, revoked or expired) on its
# REST APIs: HTTP 403 `{"error_code": 403, "message": "Invalid access token."}` (responses
# captured in databricks/databricks-sdk-go issues #873, #946; an expired OAuth token is 403 too).
INVALID_TOKEN_MESSAGE = "Invalid access token."


def check_message(check: Check, *, invalid_token_status: int = 401) -> tuple[int, str]:
    """The HTTP status and message for a refused check (never echoes the token).

    `invalid_token_status` is what an unknown or expired token gets: 403 on the workspace's REST
    APIs, as Databricks answers; 401 where a server says so (agents outside Databricks)."""
    if check.verdict == "forbidden":
        return 403, f"principal {check.principal!r} may not call this resource"
    if check.verdict in ("unknown", "expired") and invalid_token_status == 403:
        return 403, INVALID_TOKEN_MESSAGE
    messages = {
        "missing": "missing bearer token",
        "unknown": "invalid access token",
        "expired": "access token expired",
        "pat_refused": "only OAuth tokens are accepted here (not personal access, runtime or "
        "Azure Entra ID tokens); use an OAuth token",
    }
    return 401, messages.get(check.verdict, "unauthenticated")
