"""Resolve a CallSpec's endpoint to where and how each row is sent.

Forms, checked in this order:

* a name in `overrides` (from `--endpoint NAME=URL`): replaced by its URL or `builtin:instant`;
* `builtin:instant`: the in-process echo agent (no HTTP);
* `http(s)://...`: an agent server speaking the Apps protocol (`<url>/responses`, or
  `<url>/invocations` for the chat api, as MLflow's AgentServer serves them); a URL ending in
  `/invocations`, `/responses` or `/chat/completions` is used as-is. No credentials are sent to
  plain URLs, except Databricks Apps URLs, which get the workspace's OAuth token;
* `apps/<name>`: a Databricks App, its URL looked up once with the SDK (`apps.get(name).url`);
  OAuth only: a personal access token fails the run before any row is sent;
* `openai/<name>`: the OpenAI-compatible serving routes (`/serving-endpoints/responses` or
  `/serving-endpoints/chat/completions` with `"model": "<name>"`);
* `<name>` or `serving-endpoints/<name>`: `<host>/serving-endpoints/<name>/invocations`.

Host and credentials come from databricks-sdk's unified config (`DATABRICKS_HOST`, profiles,
`DATABRICKS_CLIENT_ID`/`DATABRICKS_CLIENT_SECRET`, ...).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agentbatch.agent.auth import AuthHeaders
from agentbatch.agent.calls import Api
from agentbatch.agent.redact import redact
from agentbatch.agent.retry import EndpointKind
from agentbatch.errors import AgentError, ConfigError, UsageError

if TYPE_CHECKING:
    from databricks.sdk.core import Config

BUILTIN_INSTANT = "builtin:instant"
APPS_DOMAIN_SUFFIX = ".databricksapps.com"
RETURN_TRACE_HEADER = "x-mlflow-return-trace-id"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
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

    return Config()


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
        url = _plain_url(target, api)
        # An OpenAI-compatible serving route names the endpoint in the body.
        model = name.removeprefix("openai/") if url.endswith(_OPENAI_ROUTES) else None
        return Endpoint("url", name, url=url, model=model, headers=extra)
    if name == BUILTIN_INSTANT:
        return Endpoint("builtin", name)
    if _is_url(name):
        host = urllib.parse.urlsplit(name).hostname or ""
        if host.endswith(APPS_DOMAIN_SUFFIX):
            auth = _oauth_only(_config(config_factory), f"app URL {name}")
            return Endpoint("app", name, url=_plain_url(name, api), auth=auth, headers=extra)
        return Endpoint("url", name, url=_plain_url(name, api), headers=extra)
    if name.startswith("apps/"):
        return _resolve_app(name[len("apps/") :], api, extra, config_factory)
    if name.startswith("openai/"):
        model = name[len("openai/") :]
        _check_name(model, name)
        config = _config(config_factory)
        route = "responses" if api == "responses" else "chat/completions"
        url = f"{_host(config)}/serving-endpoints/{route}"
        return Endpoint("serving", model, url=url, model=model, auth=AuthHeaders(config))
    if name.startswith("serving-endpoints/"):
        name = name[len("serving-endpoints/") :]
    _check_name(name, endpoint)
    config = _config(config_factory)
    url = f"{_host(config)}/serving-endpoints/{urllib.parse.quote(name)}/invocations"
    return Endpoint("serving", name, url=url, auth=AuthHeaders(config))


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _plain_url(url: str, api: Api) -> str:
    base = url.rstrip("/")
    if base.endswith(_AS_IS_SUFFIXES):
        return base
    return base + ("/responses" if api == "responses" else "/invocations")


def _check_name(name: str, original: str) -> None:
    if not _NAME.match(name):
        raise UsageError(
            f"endpoint {original!r} is not a serving endpoint name, apps/<name>, "
            f"openai/<name>, an http(s) URL or {BUILTIN_INSTANT}"
        )


def _config(factory: ConfigFactory) -> Config:
    try:
        return factory()
    except ValueError as e:
        raise ConfigError(
            f"Databricks authentication is not configured: {redact(str(e))}"
        ) from None


def _host(config: Config) -> str:
    host = (config.host or "").rstrip("/")
    if not host:
        raise ConfigError("Databricks host is not configured (set DATABRICKS_HOST or a profile)")
    return host


def _oauth_only(config: Config, what: str) -> AuthHeaders:
    if config.auth_type == "pat":
        raise AgentError(
            f"{what} accepts OAuth tokens only, but the configured credentials are a personal "
            "access token; use OAuth (a service principal's DATABRICKS_CLIENT_ID and "
            "DATABRICKS_CLIENT_SECRET, or `databricks auth login`)"
        )
    return AuthHeaders(config)


def _resolve_app(app: str, api: Api, extra: Mapping[str, str], factory: ConfigFactory) -> Endpoint:
    _check_name(app, f"apps/{app}")
    config = _config(factory)
    auth = _oauth_only(config, f"app {app!r}")
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import NotFound, PermissionDenied, Unauthenticated
    from databricks.sdk.errors.base import DatabricksError

    try:
        try:
            info = WorkspaceClient(config=config).apps.get(app)
        except Unauthenticated:
            # A token revoked or expired early: one fresh token, as for agent calls. (The client
            # works on a copy of the config, so it is built again.)
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
