"""Where the `databricks-sql` engine connects, and with which credentials.

Settings come from the target (`host`, `http_path` or `warehouse_id`, `profile`, `port`, `scheme`,
`catalog`, `schema`) and fall back to the environment (`DATABRICKS_HOST`, `DATABRICKS_HTTP_PATH`,
`DATABRICKS_WAREHOUSE_ID`) and to the databricks-sdk profile. Credentials are never agentbatch's
business: databricks-sdk's unified auth (PAT, OAuth M2M, profiles, Azure, ...) resolves them and
hands the connector a header factory through its `credentials_provider` hook, so no token is held
or logged here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentbatch.agent.profiles import check_profile_against_environment
from agentbatch.agent.waiting import said_if_slow
from agentbatch.errors import ConfigError

if TYPE_CHECKING:
    from databricks.sdk.core import Config

_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class WarehouseAddress:
    scheme: str
    hostname: str
    port: int
    http_path: str

    @property
    def uri(self) -> str:
        """The Thrift endpoint the connector posts to."""
        return f"{self.scheme}://{self.hostname}:{self.port}{self.http_path}"

    @property
    def workspace_url(self) -> str:
        default = _DEFAULT_PORTS.get(self.scheme)
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.hostname}{port}"


def _setting(settings: Mapping[str, Any], key: str, env: str | None = None) -> str | None:
    value = settings.get(key)
    if value is None and env is not None:
        value = os.environ.get(env)
    text = str(value).strip() if value is not None else ""
    return text or None


def workspace_host(settings: Mapping[str, Any]) -> str | None:
    """The workspace URL for databricks-sdk, or None to let it use its env vars / profile."""
    host = _setting(settings, "host")
    if host is None:
        return None
    if "://" not in host:
        scheme = _setting(settings, "scheme") or "https"
        port = _setting(settings, "port")
        host = f"{scheme}://{host}" + (f":{port}" if port else "")
    return host.rstrip("/")


def http_path(settings: Mapping[str, Any]) -> str:
    path = _setting(settings, "http_path", "DATABRICKS_HTTP_PATH")
    if path is not None:
        return "/" + path.lstrip("/")
    warehouse = _setting(settings, "warehouse_id", "DATABRICKS_WAREHOUSE_ID")
    if warehouse is not None:
        if not warehouse.replace("-", "").isalnum():
            raise ConfigError(f"databricks-sql: {warehouse!r} is not a SQL warehouse id")
        return f"/sql/1.0/warehouses/{warehouse}"
    raise ConfigError(
        "databricks-sql: no SQL warehouse given; set `warehouse_id` (or `http_path`) in the "
        "target, or DATABRICKS_WAREHOUSE_ID (or DATABRICKS_HTTP_PATH) in the environment"
    )


def warehouse_id(settings: Mapping[str, Any]) -> str | None:
    """The SQL warehouse's id: given, or read from its HTTP path; None for another kind of path
    (a cluster's)."""
    path = http_path(settings)
    prefix = "/sql/1.0/warehouses/"
    found = path[len(prefix) :].strip("/") if path.startswith(prefix) else ""
    return found if found.replace("-", "").isalnum() else None


def warehouse_address(settings: Mapping[str, Any], sdk_host: str) -> WarehouseAddress:
    """The warehouse's address: the workspace host (as databricks-sdk resolved it), with the
    target's `scheme` / `port` overriding it, and the warehouse's HTTP path."""
    parts = urlsplit(sdk_host if "://" in sdk_host else f"https://{sdk_host}")
    scheme = (_setting(settings, "scheme") or parts.scheme or "https").lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"databricks-sql: scheme must be https or http, not {scheme!r}")
    if not parts.hostname:
        raise ConfigError(f"databricks-sql: {sdk_host!r} is not a workspace host")
    port_text = _setting(settings, "port")
    try:
        port = int(port_text) if port_text else (parts.port or _DEFAULT_PORTS[scheme])
    except ValueError:
        raise ConfigError(f"databricks-sql: port must be a number, not {port_text!r}") from None
    return WarehouseAddress(scheme, parts.hostname, port, http_path(settings))


@dataclass(frozen=True)
class Credentials:
    """databricks-sdk's resolved config: its host and the connector's `credentials_provider`."""

    host: str
    auth_type: str
    provider: Callable[[], Callable[[], dict[str, str]]]
    config: Config  # for the workspace APIs


def sdk_config(settings: Mapping[str, Any]) -> Config:
    """databricks-sdk's config for the target's workspace: its `host` and `profile` settings, the
    SDK's own resolution (environment, default profile) for what they leave out. Raises
    ValueError when no credentials resolve."""
    from databricks.sdk.core import Config

    from agentbatch.version import __version__

    host = workspace_host(settings)
    profile = _setting(settings, "profile")
    if host is None:
        check_profile_against_environment(profile, "databricks-sql: the target")
    where = host or os.environ.get("DATABRICKS_HOST") or f"profile {profile or 'DEFAULT'}"
    with said_if_slow(
        f"databricks-sql: reaching the workspace ({where})",
        "databricks-sdk retries a host that does not answer for up to 5 min: check the "
        "target's host, DATABRICKS_HOST or the profile, and the network",
    ):
        return Config(host=host, profile=profile, product="agentbatch", product_version=__version__)


def names_a_workspace(settings: Mapping[str, Any]) -> bool:
    """Whether the target's settings say which workspace (else the environment does)."""
    return workspace_host(settings) is not None or _setting(settings, "profile") is not None


def sdk_credentials(settings: Mapping[str, Any]) -> Credentials:
    """Resolve credentials with databricks-sdk unified auth (env, profile, OAuth, PAT)."""
    try:
        config = sdk_config(settings)
        host = config.host
        auth_type = config.auth_type
    except ValueError as err:
        # The SDK names what it tried (env vars, profile file), never a secret.
        raise ConfigError(f"databricks-sql: no usable Databricks credentials: {err}") from None
    if not host:
        raise ConfigError(
            "databricks-sql: no workspace host; set `host` in the target, DATABRICKS_HOST, "
            "or a databricks-sdk profile"
        )

    def provider() -> Callable[[], dict[str, str]]:
        return config.authenticate

    return Credentials(host=host, auth_type=str(auth_type), provider=provider, config=config)
