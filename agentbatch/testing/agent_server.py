"""The fault-injecting demo agent server, in a background thread or as a process.

In-process (tests)::

    with serve_agent(FaultConfig(p_rate_limit=0.2, seed=7)) as server:
        ...  # POST f"{server.url}/responses"
        server.stats().requests_total

As a process (demo, benchmarks, chaos tests); the first stdout line is the base URL::

    python -m agentbatch.testing.agent_server                 # http://127.0.0.1:8000
    python -m agentbatch.testing.agent_server --port 0 --latency-ms 50 --capacity 32

Every FaultConfig field is an option (`--p-server-error 0.1`, `--fail-first 2`, ...), and
`--permanent MARKER=STATUS` adds a permanent-fault marker. It always binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from agentbatch.errors import UsageError
from agentbatch.testing.agent_app import AgentHandlers, AgentOptions
from agentbatch.testing.background import BackgroundServer, bind_loopback, start_site
from agentbatch.testing.faults import FAULT_KINDS, FaultConfig
from agentbatch.testing.stats import StatsSnapshot
from agentbatch.testing.tokens import TokenAuthority

logger = logging.getLogger(__name__)


class AgentServer:
    """A running demo agent: its URL, counters, and knobs that apply to the next request."""

    def __init__(
        self,
        faults: FaultConfig | None = None,
        *,
        options: AgentOptions | None = None,
        authority: TokenAuthority | None = None,
        port: int = 0,
    ) -> None:
        self.handlers = AgentHandlers(faults, options, authority)
        self._server = BackgroundServer(self.handlers.build_app, port=port, name="demo-agent")

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def serving_url(self) -> str:
        """Base URL for OpenAI clients talking to Model Serving (`.../serving-endpoints`)."""
        return f"{self.url}/serving-endpoints"

    def stats(self) -> StatsSnapshot:
        return self.handlers.stats.snapshot()

    def left_since(self, moment: float) -> int:
        """Requests that left the server at or after `moment` (time.monotonic())."""
        return self.handlers.stats.left_since(moment)

    def reset_stats(self) -> None:
        self.handlers.stats.reset()

    def configure(self, faults: FaultConfig | None = None, **options: Any) -> None:
        """Swap the fault config and/or AgentOptions fields; in-flight requests keep theirs."""
        if faults is not None:
            self.handlers.faults = faults
        if options:
            self.handlers.options = dataclasses.replace(self.handlers.options, **options)

    def start(self) -> AgentServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> AgentServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_agent(
    faults: FaultConfig | None = None,
    *,
    authority: TokenAuthority | None = None,
    port: int = 0,
    **options: Any,
) -> Iterator[AgentServer]:
    """Serve the demo agent on 127.0.0.1 for the `with` block; `options` are AgentOptions."""
    with AgentServer(faults, options=AgentOptions(**options), authority=authority, port=port) as s:
        yield s


# -- command line ---------------------------------------------------------------------------


DEFAULT_PORT = 8000

DESCRIPTION = f"""Serve the demo agent on 127.0.0.1 (port {DEFAULT_PORT} by default).

It speaks the Databricks Apps agent protocol (POST /responses, /invocations) and the Model Serving
routes (POST /serving-endpoints/<name>/invocations, ...), so a job reaches it with
  agentbatch run JOB --endpoint apps/<name>=http://127.0.0.1:{DEFAULT_PORT}

What it answers (deterministic: the same prompt gets the same answer):
  - a prompt that says "classify" or "triage" and mentions a "ticket": the ticket's label, from
    keyword rules (billing, bug, account, feature_request, other); with a response_format, the
    JSON object {{"label": ..., "urgency": 1-5}};
  - any other prompt: "answer: <the first 80 characters of the prompt>"; with a response_format,
    {{"answer": "answer: ..."}} (which has none of your format's fields unless one is `answer`).
Faults are off unless asked for (--p-server-error 0.1, --latency-ms 50, --capacity 8, ...).

The base URL is the first line on stdout. If port {DEFAULT_PORT} is busy and no --port was given,
it says so on stderr and listens on a free port instead. Ctrl-C stops it."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentbatch.testing.agent_server",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on (default {DEFAULT_PORT}, or a free one if it is busy); "
        "0 picks a free port",
    )
    parser.add_argument("--model", default="demo-agent")
    parser.add_argument("--minimal", action="store_true", help="answer like MLflow AgentServer")
    parser.add_argument("--stream-style", choices=("openai", "mlflow"), default=None)
    parser.add_argument("--chat-reply", choices=("completion", "chat_agent"), default="completion")
    parser.add_argument(
        "--require-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="accept only these bearer tokens (repeatable)",
    )
    defaults = FaultConfig()
    for field in dataclasses.fields(FaultConfig):
        if field.name in ("permanent", "fail_first_kind"):
            continue
        default = getattr(defaults, field.name)
        kind = int if default is None or isinstance(default, int) else float
        parser.add_argument(
            "--" + field.name.replace("_", "-"), type=kind, default=default, dest=field.name
        )
    parser.add_argument("--fail-first-kind", choices=FAULT_KINDS, default="server_error")
    parser.add_argument(
        "--permanent",
        action="append",
        default=[],
        metavar="MARKER=STATUS",
        help="requests containing MARKER always get STATUS (repeatable; replaces the default)",
    )
    return parser.parse_args(argv)


def _config_from(args: argparse.Namespace) -> FaultConfig:
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(FaultConfig)
        if f.name != "permanent"
    }
    if args.permanent:
        permanent: dict[str, int] = {}
        for item in args.permanent:
            marker, _, status = item.rpartition("=")
            if not marker or not status.isdigit():
                raise SystemExit(f"--permanent expects MARKER=STATUS, got {item!r}")
            permanent[marker] = int(status)
        values["permanent"] = permanent
    return FaultConfig(**values)


def _bind(port: int | None) -> socket.socket:
    """The port asked for; by default 8000, or a free port (said on stderr) when it is busy."""
    if port is not None:
        try:
            return bind_loopback(port)
        except OSError as err:
            raise SystemExit(
                f"agent_server: cannot listen on 127.0.0.1:{port}: {err.strerror}"
            ) from None
    try:
        return bind_loopback(DEFAULT_PORT)
    except OSError:
        sock = bind_loopback(0)
        sys.stderr.write(
            f"agent_server: port {DEFAULT_PORT} is busy; listening on port "
            f"{sock.getsockname()[1]} instead (use that URL in --endpoint)\n"
        )
        return sock


async def _serve_forever(handlers: AgentHandlers, port: int | None) -> None:
    sock = _bind(port)
    runner = await start_site(handlers.build_app(), sock)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sys.stdout.write(f"{url}\n")
    sys.stdout.flush()
    sys.stderr.write(f"demo agent listening on {url} (Ctrl-C stops it)\n")
    sys.stderr.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        faults = _config_from(args)
    except UsageError as error:
        raise SystemExit(f"agent_server: {error}") from None
    authority = None
    if args.require_token:
        authority = TokenAuthority(clients={}, pats={t: "cli-user" for t in args.require_token})
    options = AgentOptions(
        model=args.model,
        minimal=args.minimal,
        stream_style=args.stream_style,
        chat_reply=args.chat_reply,
        accept_pat=True,
    )
    handlers = AgentHandlers(faults, options, authority)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve_forever(handlers, args.port))


if __name__ == "__main__":
    main()
