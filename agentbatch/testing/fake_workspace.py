"""A loopback fake of the Databricks workspace API: app lookup, OAuth M2M, PATs.

The unmodified databricks-sdk works against it over plain http on 127.0.0.1::

    with serve_workspace({"triage-agent": agent.url}) as ws:
        w = WorkspaceClient(host=ws.url, client_id="demo-client", client_secret="demo-secret")
        w.apps.get("triage-agent").url

What the SDK calls (databricks-sdk 0.16x), all served here:

1. `GET /.well-known/databricks-config` while building the Config: host metadata whose
   `oidc_endpoint` becomes `discovery_url`. The SDK needs it for oauth-m2m: without it (or an
   explicit `discovery_url`) it has no OIDC endpoints. Nothing requires https.
2. `GET /oidc/.well-known/oauth-authorization-server`: the OIDC document naming the token URL.
3. `POST /oidc/v1/token`: client credentials (HTTP Basic `client_id:secret`, form
   `grant_type=client_credentials&scope=all-apis`) -> `{"access_token", "token_type",
   "expires_in"}`.
4. `GET /api/2.0/apps/{name}` with `Authorization: Bearer <token>`.

A PAT config (`token=...`) skips 2 and 3. `GET /api/2.0/preview/scim/v2/Me` answers who the
token belongs to; `GET /api/2.0/secrets/get` reads a secret of a scope (`put_secret`, what
databricks-sdk's remote `dbutils.secrets.get` calls); `GET /_stats` shows the counters.

Refused as the real workspace refuses them:

- a token request for a scope the OIDC endpoint does not know: 400 `invalid_scope` (RFC 6749
  section 5.2; Databricks OAuth M2M docs name `all-apis` as the scope for workspace APIs);
- a secret of a missing scope or key: 404 `RESOURCE_DOES_NOT_EXIST` (Databricks REST API reference,
  Secrets: get);
- runtime and Azure Entra ID tokens (`authority.add_token(..., kind="runtime" | "aad")`) are
  accepted by the workspace APIs, and refused by Apps (the agent server with `accept_pat=False`);
- an unknown, revoked or expired bearer token: 403 `{"error_code": 403, "message": "Invalid access
  token."}`, as Databricks answers it (not 401); no bearer token at all: 401;
- a token request that is not a form (`application/x-www-form-urlencoded`, RFC 6749 section
  4.4.2) or lacks `grant_type`: 400 `invalid_request`; another grant type: 400
  `unsupported_grant_type` (RFC 6749 section 5.2);
- an app whose name is not lowercase letters, digits and hyphens cannot be registered
  (databricks-sdk `service/apps.py` `App.name`), so no test relies on a name Databricks refuses;
  nor one whose compute or app state is none of the SDK's `ComputeState` / `ApplicationState`;
- a bearer token with 30 s or less left is refused as expired (`TokenAuthority.min_remaining_s`;
  databricks-sdk `oauth.py` `Token.expired`: "Azure Databricks rejects tokens that expire in 30
  seconds or less").
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agentbatch.testing.background import BackgroundServer
from agentbatch.testing.replies import error_body
from agentbatch.testing.tokens import (
    INVALID_TOKEN_MESSAGE,
    Check,
    TokenAuthority,
    check_message,
)

WORKSPACE_ID = "1234567890123456"
# Scopes the workspace OIDC endpoint grants to OAuth clients (Databricks docs: "Authorize
# unattended access to Databricks resources with a service principal using OAuth" uses
# `all-apis`; user flows add `offline_access`, `sql`, and the OpenID Connect scopes).
KNOWN_SCOPES = frozenset({"all-apis", "sql", "offline_access", "openid", "email", "profile"})
# "The name must contain only lowercase alphanumeric characters and hyphens" (databricks-sdk
# `service/apps.py` `App.name`).
APP_NAME = re.compile(r"^[a-z0-9-]+$")
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class FakeApp:
    name: str
    url: str
    compute_state: str = "ACTIVE"
    app_state: str = "RUNNING"
    service_principal_client_id: str = "demo-client"

    def __post_init__(self) -> None:
        if not APP_NAME.match(self.name):
            raise ValueError(
                f"app name {self.name!r}: Databricks app names are lowercase letters, digits "
                "and hyphens"
            )
        # The SDK reads a state outside its enums as None (`_enum`), which the app lookup takes
        # for a usable app: a misspelt state here would test nothing.
        from databricks.sdk.service.apps import ApplicationState, ComputeState

        for field, value, enum in (
            ("compute_state", self.compute_state, ComputeState),
            ("app_state", self.app_state, ApplicationState),
        ):
            if value not in {member.value for member in enum}:
                raise ValueError(
                    f"{field} {value!r} is none of databricks-sdk's {enum.__name__} values"
                )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": f"app-{self.name}",
            "url": self.url,
            "description": "agentbatch fake app",
            "compute_status": {
                "state": self.compute_state,
                "message": f"App compute is {self.compute_state.lower()}.",
            },
            "app_status": {
                "state": self.app_state,
                "message": f"App has status: {self.app_state.lower()}",
            },
            "service_principal_client_id": self.service_principal_client_id,
            "service_principal_name": f"app-{self.name}",
            "create_time": "2025-01-01T00:00:00Z",
            "creator": "demo-user",
        }


class WorkspaceHandlers:
    """State and request handlers of one fake workspace."""

    def __init__(self, authority: TokenAuthority, apps: Iterable[FakeApp] = ()) -> None:
        self.authority = authority
        self._lock = threading.Lock()
        self._apps = {app.name: app for app in apps}
        self._secrets: dict[tuple[str, str], str] = {}
        self.counts: Counter[str] = Counter()

    def put_app(self, app: FakeApp) -> None:
        with self._lock:
            self._apps[app.name] = app

    def remove_app(self, name: str) -> None:
        with self._lock:
            self._apps.pop(name, None)

    def put_secret(self, scope: str, key: str, value: str) -> None:
        with self._lock:
            self._secrets[(scope, key)] = value

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/databricks-config", self._host_metadata)
        app.router.add_get("/oidc/.well-known/oauth-authorization-server", self._oidc)
        app.router.add_post("/oidc/v1/token", self._token)
        app.router.add_get("/api/2.0/apps", self._list_apps)
        app.router.add_get("/api/2.0/apps/{name}", self._get_app)
        app.router.add_get("/api/2.0/preview/scim/v2/Me", self._me)
        app.router.add_get("/api/2.0/secrets/get", self._get_secret)
        app.router.add_get("/_stats", self._stats)
        return app

    async def _host_metadata(self, request: web.Request) -> web.Response:
        self._count("host_metadata")
        origin = _origin(request)
        return web.json_response({"oidc_endpoint": f"{origin}/oidc", "workspace_id": WORKSPACE_ID})

    async def _oidc(self, request: web.Request) -> web.Response:
        self._count("oidc_discovery")
        oidc = f"{_origin(request)}/oidc"
        return web.json_response(
            {
                "issuer": oidc,
                "authorization_endpoint": f"{oidc}/v1/authorize",
                "token_endpoint": f"{oidc}/v1/token",
                "grant_types_supported": ["client_credentials", "authorization_code"],
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        self._count("token_requests")
        if request.content_type != _FORM:
            # RFC 6749 section 4.4.2: the client "adds the following parameters using the
            # application/x-www-form-urlencoded format"; JSON or multipart is no token request.
            self._count("token_refused")
            return _oauth_error(400, "invalid_request", f"the body must be {_FORM}")
        form = await request.post()
        client_id, secret = _client_credentials(request.headers.get("Authorization"), form)
        if not form.get("grant_type"):
            self._count("token_refused")
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if form.get("grant_type") != "client_credentials":
            self._count("token_refused")
            return _oauth_error(
                400, "unsupported_grant_type", "only client_credentials is supported"
            )
        if client_id is None or secret is None or not self.authority.client_ok(client_id, secret):
            self._count("token_refused")
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        asked = str(form.get("scope") or "all-apis").split()
        unknown = sorted(set(asked) - KNOWN_SCOPES)
        if unknown:
            self._count("token_refused")
            return _oauth_error(400, "invalid_scope", f"unknown scope: {unknown[0]}")
        token = self.authority.issue(client_id)
        body = {
            "access_token": token.access_token,
            "token_type": "Bearer",
            "expires_in": int(self.authority.token_ttl_s),
            "scope": " ".join(asked),
        }
        return web.json_response(body)

    def _check(self, request: web.Request) -> Check:
        check = self.authority.check_header(request.headers.get("Authorization"), accept_pat=True)
        if not check.ok:
            self._count("auth_refused")
        return check

    def _refused(self, check: Check) -> web.Response:
        status, message = check_message(check, invalid_token_status=403)
        if message == INVALID_TOKEN_MESSAGE:
            # Databricks' own body here carries the status as a number, not a code name.
            return web.json_response({"error_code": 403, "message": message}, status=403)
        return _error(status, message)

    async def _get_app(self, request: web.Request) -> web.Response:
        self._count("apps_get")
        check = self._check(request)
        if not check.ok:
            return self._refused(check)
        name = request.match_info["name"]
        with self._lock:
            app = self._apps.get(name)
        if app is None:
            return _error(404, f"App with name {name} does not exist or is deleted.")
        return web.json_response(app.as_json())

    async def _list_apps(self, request: web.Request) -> web.Response:
        check = self._check(request)
        if not check.ok:
            return self._refused(check)
        with self._lock:
            apps = [app.as_json() for app in self._apps.values()]
        return web.json_response({"apps": apps})

    async def _me(self, request: web.Request) -> web.Response:
        check = self._check(request)
        if not check.ok:
            return self._refused(check)
        return web.json_response({"id": "1", "userName": check.principal, "active": True})

    async def _get_secret(self, request: web.Request) -> web.Response:
        self._count("secrets_get")
        check = self._check(request)
        if not check.ok:
            return self._refused(check)
        scope, key = request.query.get("scope", ""), request.query.get("key", "")
        with self._lock:
            scopes = {s for s, _ in self._secrets}
            value = self._secrets.get((scope, key))
        if scope not in scopes:
            return _error(404, f"Scope {scope} does not exist!")
        if value is None:
            return _error(404, f"Secret does not exist with scope: {scope} and key: {key}")
        encoded = base64.b64encode(value.encode()).decode()
        return web.json_response({"key": key, "value": encoded})

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self.counts)
        return {**counts, "tokens_issued": self.authority.issued}

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())


def _client_credentials(
    authorization: str | None, form: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    return (str(form_id) if form_id else None), (str(form_secret) if form_secret else None)


def _origin(request: web.Request) -> str:
    """The origin the client called, from the Host header: not `request.url`, which aiohttp before
    3.10.7 builds with the port inside the host, and yarl 1.13 and later refuse (aiohttp 3.9 is
    agentbatch's floor)."""
    return f"{request.scheme}://{request.host}"


def _error(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


def _oauth_error(status: int, code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=status)


class FakeWorkspace:
    """A running fake workspace: URL, the token authority, apps, counters."""

    def __init__(
        self,
        apps: Iterable[FakeApp] = (),
        *,
        authority: TokenAuthority | None = None,
        port: int = 0,
    ) -> None:
        self.authority = authority or TokenAuthority()
        self.handlers = WorkspaceHandlers(self.authority, apps)
        self._server = BackgroundServer(self.handlers.build_app, port=port, name="fake-workspace")

    @property
    def url(self) -> str:
        return self._server.url

    def add_app(self, name: str, url: str, **fields: str) -> FakeApp:
        app = FakeApp(name=name, url=url, **fields)
        self.handlers.put_app(app)
        return app

    def remove_app(self, name: str) -> None:
        self.handlers.remove_app(name)

    def put_secret(self, scope: str, key: str, value: str) -> None:
        self.handlers.put_secret(scope, key, value)

    def stats(self) -> dict[str, int]:
        """Calls by kind (`apps_get`, `token_requests`, `auth_refused`, ...) and tokens issued."""
        return self.handlers.snapshot()

    def start(self) -> FakeWorkspace:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeWorkspace:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_workspace(
    apps: Mapping[str, str] | Iterable[FakeApp] = (),
    *,
    authority: TokenAuthority | None = None,
    port: int = 0,
) -> Iterator[FakeWorkspace]:
    """Serve a fake workspace on 127.0.0.1; `apps` maps app name -> URL (or FakeApps)."""
    if isinstance(apps, Mapping):
        app_list = [FakeApp(name=name, url=url) for name, url in apps.items()]
    else:
        app_list = list(apps)
    with FakeWorkspace(app_list, authority=authority, port=port) as workspace:
        yield workspace


def non_oauth_credentials(kind: str, token: str) -> Any:
    """A databricks-sdk credentials strategy named `kind` ("runtime", "azure-cli", ...) that sends
    `token` and, like those strategies in the SDK, is not an OAuthCredentialsProvider: so
    `Config.oauth_token()` raises ValueError, and Databricks Apps refuse the token.

    The SDK's own `runtime` strategy reads the token from the Databricks runtime (`dbruntime`) and
    `azure-cli` from `az account get-access-token`; neither exists on loopback, so this stands in
    through the SDK's public `Config(credentials_strategy=...)`. Register the token with
    `authority.add_token(token, principal, kind="runtime" | "aad")`."""
    from databricks.sdk.credentials_provider import credentials_strategy

    @credentials_strategy(kind, [])  # type: ignore[untyped-decorator]
    def strategy(cfg: Any) -> Any:
        return lambda: {"Authorization": f"Bearer {token}"}

    return strategy
