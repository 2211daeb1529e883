# mypy: disable-error-code="no-untyped-call"
# (the Thrift classes generated into the connector carry no type hints)
"""Sessions and operations of the loopback warehouse: state machines, no Thrift or HTTP.

An operation runs its executor call on its own worker thread; its state moves
RUNNING -> FINISHED | ERROR | CANCELED (cancel wins over a late finish), and its result is
read by offset across fetch round-trips.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from databricks.sql.thrift_api.TCLIService import ttypes

from .arrow_wire import normalize_table
from .context import Namespace, StatementContext, bind_statement

logger = logging.getLogger(__name__)

States = ttypes.TOperationState
ACTIVE_STATES = (States.INITIALIZED_STATE, States.PENDING_STATE, States.RUNNING_STATE)
EMPTY_RESULT = pa.table({})


def new_guid() -> bytes:
    return uuid.uuid4().bytes


@dataclass
class Session:
    guid: bytes
    namespace: Namespace
    configuration: dict[str, str]
    authorization: str | None
    closed: bool = False

    @property
    def hex_id(self) -> str:
        return str(uuid.UUID(bytes=self.guid))


@dataclass
class Operation:
    guid: bytes
    session: Session
    sql: str
    context: StatementContext
    lz4_compressed: bool
    row_limit: int | None = None
    is_staging: bool = False
    forced_running_polls: int = 0
    state: int = States.RUNNING_STATE
    result: pa.Table = field(default_factory=lambda: EMPTY_RESULT)
    error: str | None = None
    offset: int = 0
    closed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hex_id(self) -> str:
        return str(uuid.UUID(bytes=self.guid))

    def start(self, work: Callable[[], pa.Table | None]) -> None:
        """Run `work` on a worker thread bound to this operation's statement context."""

        def run() -> None:
            bind_statement(self.context)
            try:
                table = work()
            except BaseException as error:  # a failed statement is a state, never a crash
                self.fail(error)
            else:
                self.finish(table)

        self.thread = threading.Thread(target=run, name=f"warehouse-op-{self.hex_id}", daemon=True)
        self.thread.start()

    def finish(self, table: pa.Table | None) -> None:
        try:
            result = EMPTY_RESULT if table is None else normalize_table(table)
            if self.row_limit is not None and self.row_limit > 0:
                result = result.slice(0, self.row_limit)
        except Exception as error:
            self.fail(error)
            return
        with self._lock:
            if self.state in ACTIVE_STATES:
                self.result = result
                self.state = States.FINISHED_STATE
        self.done.set()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.state in ACTIVE_STATES:
                self.error = str(error) or type(error).__name__
                self.state = States.ERROR_STATE
        self.done.set()

    def cancel(self) -> bool:
        """Cancel a running operation; False when it had already ended."""
        with self._lock:
            if self.state not in ACTIVE_STATES:
                return False
            self.state = States.CANCELED_STATE
        self.context.cancel()
        self.done.set()
        return True

    def report_state(self) -> int:
        """The state a status poll reports (tests may force a few RUNNING reports first)."""
        with self._lock:
            if self.forced_running_polls > 0 and self.state != States.CANCELED_STATE:
                self.forced_running_polls -= 1
                return States.RUNNING_STATE
            return self.state

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def modified_rows(self) -> int | None:
        """DML reports its affected-row count the way Databricks names it."""
        names = self.result.column_names
        if names and names[0] == "num_affected_rows" and self.result.num_rows == 1:
            value: Any = self.result.column(0)[0].as_py()
            return int(value) if value is not None else None
        return None
