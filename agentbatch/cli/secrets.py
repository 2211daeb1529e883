"""What a command line hands a command that must never be printed, registered before it runs.

`redact` masks registered secrets in every message the CLI prints (errors and log lines); the
run registers what it resolves itself (auth headers, the endpoint it calls, a job's `env()`
values when it is planned), but a command can fail before that, quoting what it was given: an
`--endpoint NAME=URL` refused as no valid URL.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from agentbatch.agent.redact import register_url_credentials


def register_command_secrets(args: argparse.Namespace) -> None:
    """The credentials of the endpoint URLs given."""
    for given in _endpoint_flags(args):
        _, _, url = given.partition("=")
        register_url_credentials(given.strip())
        register_url_credentials(url.strip())


def _endpoint_flags(args: argparse.Namespace) -> Iterator[str]:
    yield from getattr(args, "endpoint", None) or ()
    for flag in ("endpoint_a", "endpoint_b"):
        value = getattr(args, flag, None)
        if value:
            yield value
