"""Command line: parses options, calls the facade, maps errors to exit codes. Data goes to stdout,
logs to stderr.

Exit codes: 0 ok, 1 job failed, 2 spec or usage error, 3 configuration, 4 not supported by the
target, 5 engine error, 6 agent unusable, 7 budget (would be) passed, 130 interrupted, 143
terminated (SIGTERM: a run writes what it answered first, as on Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import Any

from agentbatch.errors import AgentbatchError, ConfigError, Terminated, exit_code_for
from agentbatch.execution import termination
from agentbatch.version import __version__

log = logging.getLogger("agentbatch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentbatch",
        description="Run Databricks agents and models over whole tables, from YAML job specs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  agentbatch validate jobs/*.yml
  agentbatch plan jobs/ticket_triage.yml
  agentbatch run jobs/ticket_triage.yml \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000

exit codes: 0 ok, 1 job failed, 2 spec/usage error, 3 configuration, 4 not supported,
            5 engine error, 6 agent unusable, 7 budget, 130 interrupted,
            143 terminated (SIGTERM; a run writes what it answered first)""",
    )
    parser.add_argument("--version", action="version", version=f"agentbatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from agentbatch.cli.evaluation import add_commands as add_evaluation_commands
    from agentbatch.cli.jobs import add_commands as add_job_commands

    add_job_commands(commands)
    add_evaluation_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, settings: Mapping[str, Any] | None = None) -> int:
    """The command line; `settings` are added to the run's target (the job entry point's)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.settings = dict(settings or {})
    _configure_logging(args.verbose, args.quiet)
    try:
        from agentbatch.cli.jobs import dispatch
        from agentbatch.cli.secrets import register_command_secrets

        register_command_secrets(args)
        with _terminate_as_interrupt():
            return dispatch(args)
    except KeyboardInterrupt as err:
        log.error("%s", err if isinstance(err, Terminated) else "interrupted")
        return exit_code_for(err)
    except AgentbatchError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            log.error("%s", line)
        return exit_code_for(err)
    except OSError as err:
        # A file or folder given that cannot be used (one where a folder is needed, no
        # permission, a disk full): what and where, never a traceback.
        where = f": {err.filename}" if err.filename else ""
        log.error("%s%s", err.strerror or str(err).strip() or type(err).__name__, where)
        return exit_code_for(ConfigError(str(err)))
    except ValueError as err:
        # A value the models refuse (pydantic's ValidationError is a ValueError) that reached no
        # file: one line naming what was refused, never a traceback.
        log.error("%s", _one_line(err))
        return 2
    except SystemExit:
        raise
    except BaseException as err:
        # The last resort: a failure nothing above foresaw (a bug, or user code such as a custom
        # scorer failing with a BaseException). Its traceback is what makes it useful, so it is
        # printed whole, but through the log, which masks the secrets registered by then (a job's
        # env() values, a URL's credentials) in it as in every line: Python's own printing of
        # an uncaught exception would not. Exit 1, as Python's own.
        log.error("unexpected error: %s", _first_line(err), exc_info=err)
        return 1


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the command as Ctrl-C does (`Terminated`): a run stops its calls and writes
    what it answered, then exits 143, where Python's default would end the process at once and
    leave the answers in a checkpoint an ephemeral disk (a job's compute, a container) loses.
    One that lands while a run writes what it answered is raised once the write ends
    (execution/termination.py).
    Senders follow SIGTERM with SIGKILL after a grace period: a second SIGTERM is ignored, until
    the process exits, so it cannot interrupt that write. A handler the host set (a notebook, a
    wheel task's runner) is left alone, as off the main thread, where Python cannot set one."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if termination.hold():  # a run is writing what it answered: let it finish
            log.warning("terminating (SIGTERM) once the answers are written")
            return
        raise Terminated

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is stop:  # else ignored until the process exits
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _one_line(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        problems = []
        for problem in errors(include_url=False):
            where = ".".join(str(part) for part in problem.get("loc", ()))
            message = str(problem.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return "; ".join(problems) or str(err)
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class RedactingFormatter(logging.Formatter):
    """Every line the CLI logs (errors quoting a URL, a server's words, a SQL literal, tracebacks)
    without the credentials `redact` knows or recognises."""

    def format(self, record: logging.LogRecord) -> str:
        from agentbatch.agent.redact import redact

        return redact(super().format(record))


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    )
    root = logging.getLogger("agentbatch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


if __name__ == "__main__":
    raise SystemExit(main())
