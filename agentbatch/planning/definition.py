"""The plan as data: frozen dataclasses built by `builder`, read by the runner and `explain`."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentbatch.errors import UsageError
from agentbatch.planning.targets import refuse_secret_settings
from agentbatch.spec.models import MOST_ROWS

if TYPE_CHECKING:
    from agentbatch.agent.calls import CallSpec
    from agentbatch.engines.base import DistributedCalls, WriteRequest
    from agentbatch.planning.targets import Target
    from agentbatch.spec.models import Job

Strategy = Literal["push-down", "rest-fallback"]


class UnknownOptionError(UsageError, TypeError):
    """A keyword of the API functions that is no option: a usage error (exit 2), and still the
    TypeError Python raises for an unexpected keyword argument."""


@dataclass(frozen=True)
class RunOptions:
    """Everything a caller may vary per run, in one frozen object.

    The CLI, the Python API, the bundle entry point and evaluation each build it once; every stage
    below reads it and none re-spells its fields. The keyword arguments of `agentbatch.run`,
    `plan`, `estimate`, `evaluate` and `compare` are these fields."""

    vars: Mapping[str, Any] = field(default_factory=dict)  # job variables (`--var`)
    tables: Mapping[str, Any] = field(default_factory=dict)  # table -> file, DataFrame or Arrow
    endpoints: Mapping[str, str] = field(default_factory=dict)  # endpoint -> URL for this run
    settings: Mapping[str, Any] = field(default_factory=dict)  # target settings for this run
    project_dir: str | Path | None = None  # default: the parent of the job's jobs/ folder
    state_dir: str | Path | None = None  # the ledger's folder (runner.default_state_dir)
    limit: int | None = None  # rows sent this run, after skipping answered ones
    retry_errors: bool = False  # re-send rows that failed for good
    full_refresh: bool = False  # call the agent for every selected row: no reuse of answers
    dry_run: bool = False  # render and sample requests, send nothing
    progress: bool = True  # a progress bar on a terminal
    force_fallback: bool = False  # the REST fallback even where ai_query could run
    replace_target: bool = False  # mode overwrite keeping none of the target's rows
    # Set by the runner for a push-down full refresh that continues an unfinished one (begun at
    # this moment): target rows answering the current request since then are done.
    refresh_since: datetime | None = None
    run_id: str = "run"  # set by `started()`; names staging tables and ledger entries
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        # Callers of the Python API pass what they were given: say what is wrong in its words.
        if self.limit is not None and (
            not isinstance(self.limit, int)
            or isinstance(self.limit, bool)
            or not 0 < self.limit <= MOST_ROWS
        ):
            raise UsageError(
                f"limit must be a positive number of rows (at most {MOST_ROWS:,}), "
                f"not {self.limit!r}"
            )
        # None for a mapping means "none".
        for name in ("vars", "tables", "endpoints", "settings"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise UsageError(
                    f"{name} must be a mapping ({{name: value}}), not {type(value).__name__}"
                )
            object.__setattr__(self, name, dict(value or {}))
        refuse_secret_settings(self.settings)

    @classmethod
    def of(cls, options: RunOptions | None = None, **fields: Any) -> RunOptions:
        """`options` with `fields` replaced (keyword arguments of the API functions)."""
        known = [f.name for f in dataclasses.fields(cls)]
        for name in fields:
            if name not in known:
                # `run(job, table={...})` would raise Python's TypeError naming RunOptions'
                # __init__, which the caller never called: name the keyword and the near one.
                import difflib

                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                public = ", ".join(known[: known.index("progress") + 1])
                raise UnknownOptionError(
                    f"unknown option {name!r}{hint}; the options are: {public}"
                )
        if options is None:
            return cls(**fields)
        if not isinstance(options, RunOptions):
            raise UsageError(
                f"options must be agentbatch.RunOptions, not {type(options).__name__}; "
                "or give its fields as keywords"
            )
        return dataclasses.replace(options, **fields) if fields else options

    def started(self) -> RunOptions:
        """These options for one execution: a fresh run id and start time."""
        now = datetime.now(timezone.utc)
        run_id = now.strftime("%Y%m%dT%H%M%S") + "_" + uuid.uuid4().hex[:8]
        return dataclasses.replace(self, run_id=run_id, started_at=now)


@dataclass(frozen=True)
class Statement:
    purpose: str
    template: str
    sql: str


@dataclass(frozen=True)
class Guards:
    """A push-down job's checks before any call, as SQL that fails its statement with
    `raise_error` (what a SQL file task runs: `agentbatch compile`; a run checks in Python,
    `execution/selection.py`). `source` reads the source only, so it runs before the target is
    created; `target` reads the target too, so it runs after."""

    source: Statement
    target: Statement


@dataclass(frozen=True)
class PushDown:
    statements: tuple[Statement, ...]
    # The selection the ai_query statement embeds, on its own: what a dry run counts and shows.
    # Not run by a push-down run (not in `statements`).
    inputs: Statement
    guards: Guards | None = None
    # A full refresh written by the built-in templates: a row whose new call fails transiently
    # keeps the good answer the target holds to the same request (`_answers.sql`), and the run
    # counts those rows and leaves the refresh unfinished for them. A job's own `template:`, or
    # a project's override of the templates that carry the rule, is rendered without it and
    # run as written (what ai_query returned is written), and the run ends the refresh.
    keeps_answers: bool = False

    @property
    def compiled(self) -> tuple[Statement, ...]:
        """The statements with the guards, in the order a SQL file runs them: the source's
        guard, the target's creation, the target's guard, then the statements that call
        ai_query and write."""
        if self.guards is None:
            return self.statements
        ensure, *rest = self.statements
        return (self.guards.source, ensure, self.guards.target, *rest)


@dataclass(frozen=True)
class RestFallback:
    ensure_target: Statement | None
    inputs: Statement
    call: CallSpec
    write: WriteRequest
    write_statements: tuple[Statement, ...]
    # Mode overwrite: what runs instead of the write when a run has no new answers.
    keep_only: Statement | None = None

    def distributed(self, options: RunOptions) -> DistributedCalls:
        """These steps as an engine that calls from its own workers runs them."""
        from agentbatch.engines.base import DistributedCalls

        return DistributedCalls(
            ensure_sql=self.ensure_target.sql if self.ensure_target else None,
            inputs_sql=self.inputs.sql,
            call=self.call,
            write=self.write,
            keep_only_sql=self.keep_only.sql if self.keep_only else None,
            endpoint_overrides=options.endpoints,
            retry_errors=options.retry_errors,
            refresh=options.full_refresh,
            keep_answers=options.full_refresh and not options.replace_target,
        )


@dataclass(frozen=True)
class Preflight:
    """Queries run before any call: the selection's size, what the target holds, repeated keys."""

    counts: Statement
    repeated_keys: Statement
    key_types: Statement  # the source's and the target's key types (an existing target)


@dataclass(frozen=True)
class Scored:
    """The rows an evaluation of the job scores (`evaluated_rows.sql`, built on demand by
    `planning.builder.scored_statements`): for each key of the
    current selection, the output row answering the current request, with the current source
    columns. Not incremental and without a run limit: the whole selection."""

    current: Statement
    # Every selected key the target holds any answer for (its last one): what `eval` counts as
    # answered to another request only; never scored.
    current_or_latest: Statement


@dataclass(frozen=True)
class Plan:
    job: Job
    target: Target
    strategy: Strategy
    reason: str
    steps: PushDown | RestFallback
    summary: Statement
    call_fingerprint: str
    options: RunOptions
    preflight: Preflight

    @property
    def statements(self) -> tuple[Statement, ...]:
        """Every SQL statement of the plan, in order (what `render` prints; `compile` writes
        a push-down plan's with its guards, `PushDown.compiled`)."""
        if isinstance(self.steps, PushDown):
            return self.steps.statements
        first = (self.steps.ensure_target,) if self.steps.ensure_target else ()
        return (*first, self.steps.inputs, *self.steps.write_statements)
