"""What the warehouse received, kept for tests to assert on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    configuration: dict[str, str]
    catalog: str | None
    schema: str | None
    client_protocol: int | None


@dataclass(frozen=True)
class StatementRecord:
    statement_id: str
    session_id: str
    sql: str
    params: dict[str, Any]
    conf_overlay: dict[str, str]
    session_conf: dict[str, str]
    run_async: bool
    direct_results: bool


@dataclass
class Records:
    """Append-only logs, safe to read from the test thread while the server runs."""

    sessions: list[SessionRecord] = field(default_factory=list)
    executions: list[StatementRecord] = field(default_factory=list)
    cancelled: list[StatementRecord] = field(default_factory=list)
    closed_sessions: list[str] = field(default_factory=list)
    # Statement id of every GetOperationStatus call.
    polls: list[str] = field(default_factory=list)
    # (statement id, rows sent) per result round-trip: direct results and each FetchResults.
    fetches: list[tuple[str, int]] = field(default_factory=list)
    # Every Authorization header value received (tests check the token arrives; never logged).
    authorizations: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, log: list[Any], item: Any) -> None:
        with self._changed:
            log.append(item)
            self._changed.notify_all()

    def notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)
