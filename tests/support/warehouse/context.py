"""What the warehouse knows about the statement an executor is running right now.

The server runs every statement on its own worker thread and publishes a `StatementContext` in a
context variable, so an executor stays a plain `(sql, params) -> pa.Table | None` callable and can
still read the session's namespace and hook into cancellation when it needs to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class Namespace:
    """A session's current catalog and schema (changed by `USE ...`)."""

    catalog: str = "main"
    schema: str = "default"


@dataclass
class StatementContext:
    statement_id: str
    namespace: Namespace
    session_id: str = ""
    session_conf: dict[str, str] = field(default_factory=dict)
    statement_conf: dict[str, str] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)
    _cancel_hooks: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run `hook` when the statement is cancelled (at once if it already was)."""
        with self._lock:
            if not self.cancelled.is_set():
                self._cancel_hooks.append(hook)
                return
        hook()

    def cancel(self) -> None:
        with self._lock:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
            hooks, self._cancel_hooks = self._cancel_hooks, []
        for hook in hooks:
            hook()


_current: ContextVar[StatementContext | None] = ContextVar("warehouse_statement", default=None)


def current_statement() -> StatementContext | None:
    """The statement being executed on this thread, or None outside the warehouse."""
    return _current.get()


def bind_statement(context: StatementContext) -> None:
    """Called by the server on the statement's worker thread before it runs the executor."""
    _current.set(context)


# What the warehouse runs statements with: SQL text as sent and the decoded named parameters;
# returns the result rows, or None for a statement without a result set.
Executor = Callable[[str, Mapping[str, Any]], "pa.Table | None"]


class MetadataSource(Protocol):
    """Optional executor extension answering the connector's metadata calls
    (`cursor.catalogs()`, `.schemas()`, `.tables()`, `.columns()`).

    `kind` is one of "catalogs", "schemas", "tables", "columns"; filters are the request's
    `catalog`, `schema`, `table`, `column` name patterns (SQL LIKE, None for all).
    """

    def metadata(self, kind: str, filters: Mapping[str, str | None]) -> pa.Table: ...


class SessionAware(Protocol):
    """Optional executor extension: told when a client session closes (drop its temp state)."""

    def end_session(self, session_id: str) -> None: ...
