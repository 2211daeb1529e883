"""The one exception tree of agentbatch, and the exit code of each branch.

    AgentbatchError                  exit 1   base; anything not below
    ├── SpecError                    exit 2   a job file, a --var, a template: names file:line
    │   └── TemplateError            exit 2   Jinja or rendered-SQL error: names template:line
    ├── UsageError                   exit 2   bad command-line or API arguments
    ├── ConfigError                  exit 3   target / connection / auth settings missing or wrong
    ├── MissingDependencyError       exit 3   an optional extra is not installed (says which)
    ├── NotSupportedError            exit 4   the chosen target cannot do what the job asks
    ├── EngineError                  exit 5   the SQL engine failed a statement
    ├── AgentError                   exit 6   the agent endpoint is unusable for the whole run
    │                                         (auth refused, app not found); row errors never raise
    ├── BudgetError                  exit 7   a budget (rows, tokens, cost) would be or was passed:
    │   │                                     nothing sent, or sending stopped; answers are written
    │   └── ErrorRateError           exit 7   too many rows failed for good: sending stopped early
    └── JobFailedError               exit 1   the job ran, but rows failed with fail_on_error: true

Row-level failures are values in the `error` column, never exceptions.
"""

from __future__ import annotations


class AgentbatchError(Exception):
    exit_code = 1


class SpecError(AgentbatchError):
    """A job file, variable or template is wrong. The message starts with `file:line: key.path:`."""

    exit_code = 2


class TemplateError(SpecError):
    pass


class JobValueError(TemplateError):
    """A job value found wrong only when it is used (a response_format rendered): it keeps the
    value's key path, for the plan to name the file and line it came from."""

    def __init__(self, message: str, key_path: tuple[str, ...]) -> None:
        super().__init__(message)
        self.key_path = key_path


class UsageError(AgentbatchError):
    exit_code = 2


class ConfigError(AgentbatchError):
    exit_code = 3


class MissingDependencyError(ConfigError):
    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; install it with: pip install 'agentbatch[{extra}]'"
        )
        self.module = module
        self.extra = extra


class NotSupportedError(AgentbatchError):
    exit_code = 4


class EngineError(AgentbatchError):
    exit_code = 5


class SourceValueError(EngineError):
    """A value the SQL of a statement does not convert (`CAST('x' AS INT)`): the statement fails,
    as Databricks' ANSI CAST fails it (`CAST_INVALID_INPUT`, `CAST_OVERFLOW`). The runner names
    the job's SQL value that fails (execution/value_errors.py)."""


class AgentError(AgentbatchError):
    exit_code = 6


class BudgetError(AgentbatchError):
    """A run would pass, or has reached, its budget (`--max-rows`, `--max-tokens`, `--max-cost`)."""

    exit_code = 7


class ErrorRateError(BudgetError):
    """The share of rows failed for good passed `max_error_rate`: a broken job stops paying."""


class JobFailedError(AgentbatchError):
    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler cancelling the task, a container stopping, `timeout`): the command
    line stops as on Ctrl-C, and a run writes what it answered first (`cli.main`)."""

    def __str__(self) -> str:
        return "terminated (SIGTERM)"


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, AgentbatchError):
        return error.exit_code
    if isinstance(error, Terminated):
        return 128 + 15  # as a shell reports a process SIGTERM ended
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 1


# A run that stops early (a budget, the error rate, Ctrl-C, the endpoint gone) has still written
# what it answered: its summary rides on the exception, as `error.run_summary`.
SUMMARY_ATTRIBUTE = "run_summary"


def attach_summary(error: BaseException, summary: dict[str, object] | None) -> None:
    if summary is not None:
        setattr(error, SUMMARY_ATTRIBUTE, summary)


def run_summary(error: BaseException) -> dict[str, object] | None:
    """The summary of the run `error` stopped, when it wrote one."""
    summary = getattr(error, SUMMARY_ATTRIBUTE, None)
    return summary if isinstance(summary, dict) else None
