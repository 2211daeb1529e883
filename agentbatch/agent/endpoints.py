"""Resolve a CallSpec's endpoint to where and how each row is sent.

Forms, checked in this order:

* a name in `overrides` (from `--endpoint NAME=URL`): replaced by its URL or `builtin:instant`;
* `builtin:instant`: the in-process echo agent (no HTTP);
* `http(s)://...`: an agent server speaking the Apps protocol (`<url>/responses`, or
  `<url>/invocations` for the chat api, as MLflow's AgentServer serves them; a query string stays
  after the route); a URL whose path ends in `/invocations`, `/responses` or `/chat/completions`
  is used as-is. No credentials are sent to plain URLs, except Databricks Apps URLs, which get the
  workspace's OAuth token;
* `apps/<name>`: a Databricks App, its URL looked up once with the SDK (`apps.get(name).url`);
  OAuth only: credentials for which `Config.oauth_token()` fails (a personal access token, the
  `runtime` credentials of job compute, Azure Entra ID) fail the run before any row is sent.
  With `use_app_credentials(AppCredentials(scope))` (the `apps_secret_scope` target setting) the
  App is called as the service principal whose OAuth client id and secret are read from that
  Databricks secret scope, through databricks-sdk's `oauth-m2m`;
* `openai/<name>`: the OpenAI-compatible serving routes (`/serving-endpoints/responses` or
  `/serving-endpoints/chat/completions` with `"model": "<name>"`);
* `<name>` or `serving-endpoints/<name>`: `<host>/serving-endpoints/<name>/invocations`.

Host and credentials come from databricks-sdk's unified config (`DATABRICKS_HOST`, profiles,
`DATABRICKS_CLIENT_ID`/`DATABRICKS_CLIENT_SECRET`, ...).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agentbatch.agent.auth import AuthHeaders
from agentbatch.agent.calls import Api
from agentbatch.agent.redact import (
    redact,
    register_secret,
    register_url_credentials,
    safe_url,
)
from agentbatch.agent.retry import EndpointKind
from agentbatch.agent.waiting import said_if_slow
from agentbatch.errors import AgentError, ConfigError, UsageError

if TYPE_CHECKING:
    from databricks.sdk.core import Config

BUILTIN_INSTANT = "builtin:instant"
APPS_DOMAIN_SUFFIX = ".databricksapps.com"
RETURN_TRACE_HEADER = "x-mlflow-return-trace-id"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Secret scope and key names: alphanumerics, dashes, underscores, @ and periods, at most 128
# characters (Databricks docs: security/secrets, "Secret scopes" / "Secrets" naming rules).
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
_AS_IS_SUFFIXES = ("/invocations", "/responses", "/chat/completions")
_OPENAI_ROUTES = ("/serving-endpoints/responses", "/serving-endpoints/chat/completions")
_BAD_APP_COMPUTE = {"STOPPED", "STOPPING", "ERROR", "DELETING"}
_BAD_APP_STATUS = {"CRASHED", "UNAVAILABLE"}

ConfigFactory = Callable[[], "Config"]


@dataclass(frozen=True)
class Endpoint:
    kind: EndpointKind
    # What the job named (for messages).
    name: str
    # Where each row is POSTed ("" for builtin).
    url: str = ""
    # The body's "model" field, for the OpenAI-compatible serving routes.
    model: str | None = None
    auth: AuthHeaders | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def default_config() -> Config:
    from databricks.sdk.core import Config

    from agentbatch.agent.profiles import check_profile_against_environment

    check_profile_against_environment(None, "DATABRICKS_CONFIG_PROFILE")
    with said_if_slow(
        f"reaching the workspace ({os.environ.get('DATABRICKS_HOST') or 'from the profile'})",
        "databricks-sdk retries a host that does not answer for up to 5 min: check "
        "DATABRICKS_HOST or the profile, and the network",
    ):
        return Config()


@dataclass(frozen=True)
class AppCredentials:
    """Where the service principal that calls Apps keeps its OAuth M2M secret: a secret scope."""

    secret_scope: str
    client_id_key: str = "client-id"
    client_secret_key: str = "client-secret"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AppCredentials | None:
        """`apps_secret_scope`, `apps_client_id_key`, `apps_client_secret_key` of a target."""
        scope = settings.get("apps_secret_scope")
        if not scope:
            return None
        names = {
            "client_id_key": settings.get("apps_client_id_key") or cls.client_id_key,
            "client_secret_key": settings.get("apps_client_secret_key") or cls.client_secret_key,
        }
        for what, value in (("apps_secret_scope", scope), *names.items()):
            if not isinstance(value, str) or not _SECRET_NAME.match(value):
                raise UsageError(f"target setting {what}: {value!r} is not a secret scope/key name")
        return cls(str(scope), **{k: str(v) for k, v in names.items()})


# Process-wide: set by the engine from its target settings before the run resolves endpoints.
_app_credentials: AppCredentials | None = None


def use_app_credentials(credentials: AppCredentials | None) -> None:
    """Call Apps as the service principal in `credentials` (None: the ambient credentials)."""
    global _app_credentials
    _app_credentials = credentials


def resolve_endpoint(
    endpoint: str,
    *,
    api: Api,
    overrides: Mapping[str, str] | None = None,
    databricks_options: Mapping[str, Any] | None = None,
    config_factory: ConfigFactory = default_config,
) -> Endpoint:
    """Resolve once per run (blocking: may call the workspace). Raises AgentError / ConfigError."""
    name = endpoint.strip()
    target = (overrides or {}).get(name)
    trace = bool((databricks_options or {}).get("return_trace"))
    extra = MappingProxyType({RETURN_TRACE_HEADER: "true"} if trace else {})
    if target is not None:
        target = target.strip()
        if target == BUILTIN_INSTANT:
            return Endpoint("builtin", name)
        if not _is_url(target):
            raise UsageError(
                f"--endpoint {name}=...: the override must be an http(s) URL or {BUILTIN_INSTANT}"
            )
        # A password or `?code=` key the URL carries is masked wherever a server echoes it.
        register_url_credentials(target)
        url = _plain_url(target, api)
        # An OpenAI-compatible serving route names the endpoint in the body.
        route = urllib.parse.urlsplit(url).path
        model = name.removeprefix("openai/") if route.endswith(_OPENAI_ROUTES) else None
        return Endpoint("url", name, url=url, model=model, headers=extra)
    if name == BUILTIN_INSTANT:
        return Endpoint("builtin", name)
    if _is_url(name):
        register_url_credentials(name)
        host = urllib.parse.urlsplit(name).hostname or ""
        if host.endswith(APPS_DOMAIN_SUFFIX):
            auth = _oauth_only(_app_config(config_factory), f"app URL {safe_url(name)}")
            return Endpoint("app", name, url=_plain_url(name, api), auth=auth, headers=extra)
        return Endpoint("url", name, url=_plain_url(name, api), headers=extra)
    if name.startswith("apps/"):
        return _resolve_app(name[len("apps/") :], api, extra, config_factory)
    if name.startswith("openai/"):
        model = name[len("openai/") :]
        _check_name(model, name)
        config = _config(config_factory, name)
        route = "responses" if api == "responses" else "chat/completions"
        url = f"{_host(config, name)}/serving-endpoints/{route}"
        return Endpoint("serving", model, url=url, model=model, auth=AuthHeaders(config))
    named = name
    if name.startswith("serving-endpoints/"):
        name = name[len("serving-endpoints/") :]
    _check_name(name, endpoint)
    config = _config(config_factory, named)
    url = f"{_host(config, named)}/serving-endpoints/{urllib.parse.quote(name)}/invocations"
    return Endpoint("serving", name, url=url, auth=AuthHeaders(config))


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _plain_url(url: str, api: Api) -> str:
    """The URL rows are POSTed to: the route goes on the path, the query (an Azure `api-version`,
    a function `code`) stays after it."""
    parts = urllib.parse.urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if not path.endswith(_AS_IS_SUFFIXES):
        path += "/responses" if api == "responses" else "/invocations"
    return urllib.parse.urlunsplit(parts._replace(path=path))


def _check_name(name: str, original: str) -> None:
    if not _NAME.match(name):
        raise UsageError(
            f"endpoint {original!r} is not a serving endpoint name, apps/<name>, "
            f"openai/<name>, an http(s) URL or {BUILTIN_INSTANT}"
        )


def _config(factory: ConfigFactory, endpoint: str | None = None) -> Config:
    """The workspace config; `endpoint`, the Databricks name a job gave, is named in the error
    without one, with the `--endpoint` mapping that runs its rows against a local agent."""
    try:
        return factory()
    except ValueError as e:
        raise ConfigError(
            f"Databricks authentication is not configured: {redact(str(e)).rstrip('. ')}"
            + _local_agent_hint(endpoint)
        ) from None


def _host(config: Config, endpoint: str | None = None) -> str:
    host = (config.host or "").rstrip("/")
    if not host:
        raise ConfigError(
            "Databricks host is not configured (set DATABRICKS_HOST or a profile)"
            + _local_agent_hint(endpoint)
        )
    return host


def _local_agent_hint(endpoint: str | None) -> str:
    if endpoint is None:
        return ""
    # A concrete port (the demo agent's): `:PORT` is no URL, and messages mask what is none.
    return (
        f"; or, to send endpoint {endpoint}'s rows to an agent on this machine, run with "
        f"--endpoint {endpoint}=http://127.0.0.1:8000 (the port your agent server prints)"
    )


_CONFIGURE_OAUTH = (
    "configure a service principal with CAN USE on the app: its OAuth secret in a Databricks "
    "secret scope named by the target setting apps_secret_scope (keys client-id and "
    "client-secret), or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET; or `databricks auth "
    "login` on a workstation"
)


def _oauth_only(config: Config, what: str) -> AuthHeaders:
    """Apps accept OAuth tokens only (Databricks docs: dev-tools/databricks-apps/connect-local; a
    PAT and an Azure Entra ID token are refused). As databricks-openai and MLflow do, the test is
    `Config.oauth_token()` succeeding: it raises ValueError for pat, runtime, azure-* credentials."""
    try:
        config.oauth_token()
    except ValueError as e:
        if "not available for" in str(e):
            raise AgentError(
                f"{what} accepts OAuth tokens only, but the configured credentials "
                f"({config.auth_type}) give none; {_CONFIGURE_OAUTH}"
            ) from None
        raise AgentError(f"{what}: getting an OAuth token failed: {redact(str(e))}") from None
    return AuthHeaders(config)


def _app_config(factory: ConfigFactory, endpoint: str | None = None) -> Config:
    """The config Apps are called with: the service principal of the secret scope, if set."""
    base = _config(factory, endpoint)
    credentials = _app_credentials
    if credentials is None:
        return base
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    client = WorkspaceClient(config=base)
    client_id = _read_secret(client, credentials.secret_scope, credentials.client_id_key)
    secret = _read_secret(client, credentials.secret_scope, credentials.client_secret_key)
    try:
        return Config(
            host=_host(base), client_id=client_id, client_secret=secret, auth_type="oauth-m2m"
        )
    except ValueError as e:
        raise ConfigError(
            f"the service principal of secret scope {credentials.secret_scope!r} cannot sign in: "
            f"{redact(str(e))}"
        ) from None


def _read_secret(client: Any, scope: str, key: str) -> str:
    """Through `WorkspaceClient.dbutils`: on Databricks the runtime's own dbutils (the secrets REST
    API "can only be called from the DBUtils interface", databricks-sdk `SecretsAPI.get_secret`),
    elsewhere the SDK's remote dbutils (`GET /api/2.0/secrets/get`)."""
    from databricks.sdk.errors.base import DatabricksError

    try:
        value = str(client.dbutils.secrets.get(scope, key)).strip()
    except DatabricksError as e:
        raise ConfigError(
            f"cannot read secret {key!r} of scope {scope!r}: {redact(str(e))}"
        ) from None
    if not value:
        raise ConfigError(f"secret {key!r} of scope {scope!r} is empty")
    register_secret(value)
    return value


def _resolve_app(app: str, api: Api, extra: Mapping[str, str], factory: ConfigFactory) -> Endpoint:
    _check_name(app, f"apps/{app}")
    config = _app_config(factory, f"apps/{app}")
    auth = _oauth_only(config, f"app {app!r}")
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import NotFound, PermissionDenied, Unauthenticated
    from databricks.sdk.errors.base import DatabricksError

    try:
        try:
            info = WorkspaceClient(config=config).apps.get(app)
        except (Unauthenticated, PermissionDenied):
            # A token revoked or expired early: one fresh token, as for agent calls. Databricks
            # answers such a token 403 "Invalid access token." as often as 401, so a 403 is
            # tried once more too; a real lack of permission is refused again. (The client works
            # on a copy of the config, so it is built again.)
            config.init_auth()  # type: ignore[no-untyped-call]
            info = WorkspaceClient(config=config).apps.get(app)
    except NotFound:
        raise AgentError(f"app {app!r} was not found in workspace {_host(config)}") from None
    except PermissionDenied as e:
        raise AgentError(f"no permission to look up app {app!r}: {redact(str(e))}") from None
    except DatabricksError as e:
        raise AgentError(f"looking up app {app!r} failed: {redact(str(e))}") from None
    compute = (
        info.compute_status.state.value
        if info.compute_status and info.compute_status.state
        else None
    )
    status = info.app_status.state.value if info.app_status and info.app_status.state else None
    if compute in _BAD_APP_COMPUTE:
        raise AgentError(
            f"app {app!r} compute is {compute}; start it with `databricks apps start {app}`"
        )
    if status in _BAD_APP_STATUS:
        detail = info.app_status.message if info.app_status and info.app_status.message else ""
        raise AgentError(f"app {app!r} is {status}" + (f": {redact(detail)}" if detail else ""))
    if not info.url:
        raise AgentError(f"app {app!r} has no URL (is it deployed?)")
    route = "/responses" if api == "responses" else "/invocations"
    return Endpoint("app", app, url=info.url.rstrip("/") + route, auth=auth, headers=extra)
