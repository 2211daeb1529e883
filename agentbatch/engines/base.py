"""The engine interface: execute Databricks SQL, stream Arrow batches out, write result batches in.

Engines receive SQL rendered in the Databricks dialect and transpile it themselves when they speak
another (`dialect`). What differs between engines is declared as class attributes, so the planner
can decide without connecting.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from agentbatch.agent.redact import redact

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.agent.calls import CallSpec
    from agentbatch.agent.ledger import Ledger

WriteMode = Literal["overwrite", "append", "merge"]


@dataclass(frozen=True)
class WriteRequest:
    """Write result rows into `table` (a Databricks three-part name).

    `key` is the merge key; `columns` is the full output column order. The engine stages the
    batches under `staging_name` and runs `write_sql` (Databricks SQL, rendered by the planner from
    the `write_results` template, reading from the staging relation).
    """

    table: str
    key: str
    mode: WriteMode
    staging_name: str
    write_sql: tuple[str, ...]


@dataclass(frozen=True)
class WriteStats:
    rows_written: int


@dataclass(frozen=True)
class DistributedCalls:
    """The REST fallback handed whole to an engine that calls the agent from its own workers:
    create the target if missing (`ensure_sql`), answer the rows `inputs_sql` selects, write them
    with `write`, or run `keep_only_sql` when there are none (mode overwrite)."""

    ensure_sql: str | None
    inputs_sql: str
    call: CallSpec
    write: WriteRequest
    keep_only_sql: str | None
    endpoint_overrides: Mapping[str, str]
    retry_errors: bool
    # --full-refresh: every row is answered again, once (a stopped refresh is continued).
    refresh: bool
    # The job output's ledger (the checkpoint of runs on the driver), read beside the workers'
    # own checkpoint: a key's latest answer in either counts. None: none is read.
    ledger: Path | None = None
    # A refresh: when it began (microseconds since the epoch), as the ledger records it for
    # every path; answers received since then are its own, and reused. None: now.
    refresh_since: int | None = None
    # A refresh of the target's rows: a row whose new call fails transiently keeps the answer
    # the target holds to the same request (no error) instead of the failure, and is counted
    # (`kept_previous_answer`).
    keep_answers: bool = False


class Engine(Protocol):
    name: ClassVar[str]
    # sqlglot dialect the engine executes.
    dialect: ClassVar[str]
    # True when `ai_query` runs inside the engine (natively or as a registered function).
    native_ai_query: ClassVar[bool]
    # True when the engine can answer the REST fallback on its own workers (`DistributedEngine`).
    distributed_calls: ClassVar[bool]

    @classmethod
    def staging_relation(cls, table: str, run_id: str) -> str:
        """The relation name the planner renders write SQL against (a temp view or a table)."""
        ...

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    def fetch_batches(
        self, sql: str, params: Mapping[str, Any] | None = None, *, batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]: ...

    def fetch_one(self, sql: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]: ...

    def table_exists(self, table: str) -> bool: ...

    def write_results(
        self, request: WriteRequest, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> WriteStats: ...

    def read_table(self, table: str, limit: int | None = None) -> pa.Table: ...

    def ai_query_missing(self) -> str | None:
        """Why ai_query cannot run here though the engine has it (a SQL Classic warehouse), else
        None: the runner then calls the endpoint over REST instead."""
        ...

    def check_can_write(self, table: str) -> None:
        """Before the REST fallback's first call: raise ConfigError when the run could read
        `table` (it exists) but not write it, so that no answer is paid for and then refused."""
        ...

    def close(self) -> None: ...


class DistributedEngine(Engine, Protocol):
    """An engine with `distributed_calls`: whether its workers can reach agents is known only once
    it is connected (Spark on serverless cannot), hence `calls_on_workers`."""

    calls_on_workers: bool

    def run_distributed(self, work: DistributedCalls) -> dict[str, Any]:
        """Answer, write and clean up; the run's figures (as the bulk runner reports them)."""
        ...

    def share_answers(self, work: DistributedCalls, ledger: Ledger) -> int:
        """Before a run on the driver: add to `ledger` the answers the workers' own checkpoint
        holds for the keys `work` selects where they are newer than the ledger's (the latest
        answer per key counts, whichever side received it); how many were added."""
        ...

    def copy_answers(self, work: DistributedCalls, run_id: str) -> AnswerCopies | None:
        """Where a run on the driver copies the answers its ledger commits, as they arrive: the
        workers' checkpoint when it outlives the driver's disk (which the ledger is on); None
        when there is no such place."""
        ...

    def fold_copies(self, work: DistributedCalls, copies: AnswerCopies) -> None:
        """After the run's write: its copies are in the target, the checkpoint may fold them."""
        ...

    def refresh_began(self, work: DistributedCalls) -> int | None:
        """When the unfinished full refresh the workers' checkpoint records began (microseconds
        since the epoch), where it outlives the driver's disk; None if none."""
        ...

    def record_refresh(self, work: DistributedCalls, since: int | None) -> None:
        """Record there the unfinished full refresh begun at `since` (None: no refresh is
        unfinished), beside the ledger's record, which a new disk does not have."""
        ...


class AnswerCopies(Protocol):
    """A run's committed answers, copied where a lost disk cannot take them."""

    def add(self, rows: pa.RecordBatch | pa.Table) -> None: ...

    def close(self) -> None:
        """Copy what is held and stop; a second call does nothing."""
        ...


def error_line(err: BaseException) -> str:
    """An engine's error as one line: its first paragraph (Databricks breaks the line after an
    error class: `[INSUFFICIENT_PERMISSIONS] Insufficient privileges:` then what is missing; a
    SQL excerpt follows a blank line), without the secrets `redact` knows: a SQL literal a job's
    env() rendered comes back quoted in a conversion error."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    paragraph = text.split("\n\n", 1)[0]
    return redact(" ".join(line.strip() for line in paragraph.splitlines() if line.strip()))


@contextlib.contextmanager
def ctrl_c_kept() -> Iterator[None]:
    """Around DuckDB work: DuckDB takes SIGINT while a query runs and raises an error of its own
    (`InterruptException`; DuckDB 2.0 a RuntimeError 'Query interrupted'), which the callers'
    error handling would report as an engine or file error (exit 5 or 2). Ctrl-C stays the
    user's KeyboardInterrupt."""
    try:
        yield
    except Exception as err:
        duckdb = sys.modules.get("duckdb")
        if (duckdb is not None and isinstance(err, duckdb.InterruptException)) or (
            type(err) is RuntimeError and str(err) == "Query interrupted"
        ):
            raise KeyboardInterrupt from err
        raise
