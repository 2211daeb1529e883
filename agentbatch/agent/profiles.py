"""A Databricks profile against the `DATABRICKS_*` environment variables.

databricks-sdk reads the profile file after the environment and keeps what the environment set
(`Config._known_file_config_loader`: "don't overwrite a value previously set"). So a profile named
by a target (or by `DATABRICKS_CONFIG_PROFILE`) beside a `DATABRICKS_HOST` of another workspace
signs in to that other host with the profile's credentials, and a `DATABRICKS_TOKEN` is sent in
place of the profile's own. Both are refused here, before the SDK reaches out.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from agentbatch.agent.redact import safe_url
from agentbatch.errors import ConfigError

_DEFAULT_PORTS = {"https": 443, "http": 80}


def check_profile_against_environment(profile: str | None, who: str) -> None:
    """ConfigError when the profile (`profile`, named by `who`; else DATABRICKS_CONFIG_PROFILE's)
    has a host or token that DATABRICKS_HOST or DATABRICKS_TOKEN would replace."""
    if profile is None:
        profile = (os.environ.get("DATABRICKS_CONFIG_PROFILE") or "").strip() or None
        who = "DATABRICKS_CONFIG_PROFILE"
    env_host = (os.environ.get("DATABRICKS_HOST") or "").strip()
    env_token = (os.environ.get("DATABRICKS_TOKEN") or "").strip()
    if profile is None or not (env_host or env_token):
        return
    section = _profile(profile)
    named = (section.get("host") or "").strip()
    if env_host and named and not _same_host(named, env_host):
        raise ConfigError(
            f"{who} names profile {profile!r} (host {safe_url(named)}), but DATABRICKS_HOST says "
            f"{safe_url(env_host)}: unset DATABRICKS_HOST, or name the host to say which "
            "workspace is meant"
        )
    token = (section.get("token") or "").strip()
    if env_token and token and token != env_token:
        raise ConfigError(
            f"{who} names profile {profile!r}, which has a token of its own, but "
            "DATABRICKS_TOKEN holds another, which databricks-sdk would send instead: unset "
            "DATABRICKS_TOKEN to use the profile's"
        )


def _profile(name: str) -> Mapping[str, str]:
    path = os.path.expanduser(os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return {}  # the SDK reads it next, and names what is wrong with it
    # configparser keeps [DEFAULT] apart from the sections: the SDK's default profile is it.
    if name == "DEFAULT":
        return parser.defaults()
    return parser[name] if parser.has_section(name) else {}


def _same_host(a: str, b: str) -> bool:
    def key(url: str) -> tuple[str, int | None]:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        return ((parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(parts.scheme))

    return key(a) == key(b)
