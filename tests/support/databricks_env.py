"""Databricks auth isolation for the tests: a test signs in with what it sets itself, never with
what the machine running it has.

databricks-sdk (through which the engines, the REST fallback and the connector sign in) takes
credentials from the environment (`DATABRICKS_*`, and the Azure and Google variables of its
cloud sign-ins) and from a profile file (`~/.databrickscfg`, or the file DATABRICKS_CONFIG_FILE
names). Isolated, a test has none of those variables and a profile file that does not exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

CREDENTIAL_PREFIXES = ("DATABRICKS_", "ARM_", "AZURE_", "GOOGLE_")


def without_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables databricks-sdk takes credentials or settings from."""
    return {k: v for k, v in env.items() if not k.startswith(CREDENTIAL_PREFIXES)}


def auth_env(tmp: Path, *, host: str | None = None, token: str | None = None) -> dict[str, str]:
    """A test's own auth as variables: a profile file in `tmp` that does not exist, and the host
    and token given."""
    env = {"DATABRICKS_CONFIG_FILE": str(tmp / "no-databrickscfg")}
    if host is not None:
        env["DATABRICKS_HOST"] = host
    if token is not None:
        env["DATABRICKS_TOKEN"] = token
    return env


def isolate(
    monkeypatch: pytest.MonkeyPatch,
    tmp: Path,
    *,
    host: str | None = None,
    token: str | None = None,
) -> None:
    """This process's environment, for the test: no ambient credentials, only `auth_env`."""
    for name in list(os.environ):
        if name.startswith(CREDENTIAL_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in auth_env(tmp, host=host, token=token).items():
        monkeypatch.setenv(name, value)


def isolated_env(
    tmp: Path, *, host: str | None = None, token: str | None = None, **extra: str
) -> dict[str, str]:
    """A child process's environment: this one's without ambient credentials, with `auth_env`
    and `extra`."""
    return {**without_credentials(os.environ), **auth_env(tmp, host=host, token=token), **extra}
