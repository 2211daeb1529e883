"""Progress of a bulk run: a live bar on a terminal, periodic log lines otherwise.

Reporters are told about progress by the run's single writer (after each group commit); they
decide how often to show it. No timers, no polling.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from agentbatch.agent.stats import BulkStats

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)


class ProgressReporter(Protocol):
    def start(self, total: int | None) -> None: ...

    def update(self, stats: BulkStats) -> None: ...

    def finish(self, stats: BulkStats) -> None: ...


def summary_line(stats: BulkStats, total: int | None = None) -> str:
    done = f"{stats.done}/{total}" if total else str(stats.done)
    line = (
        f"{done} rows done ({stats.ok} ok, {stats.errors} errors, {stats.reused} reused), "
        f"{stats.rows_per_s:.1f} rows/s, {stats.retries} retries, {stats.http_429} HTTP 429"
    )
    if total and stats.rows_per_s > 0:
        remaining = max(0, total - stats.done)
        line += f", ETA {remaining / stats.rows_per_s:.0f}s"
    return line


class LogProgress:
    """One INFO line every `interval_s` seconds, and one at the end."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval = interval_s
        self._last = 0.0
        self._total: int | None = None

    def start(self, total: int | None) -> None:
        self._total = total
        self._last = time.monotonic()

    def update(self, stats: BulkStats) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            log.info("%s", summary_line(stats, self._total))

    def finish(self, stats: BulkStats) -> None:
        log.info("finished: %s", summary_line(stats, self._total))


class RichProgress:
    """A rich progress bar: done, errors, rate, ETA."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]agent calls"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[errors]} errors"),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("calls", total=total, errors=0, rate="-")

    def update(self, stats: BulkStats) -> None:
        if self._progress is None or self._task is None:
            return
        fields: dict[str, Any] = {"errors": stats.errors, "rate": f"{stats.rows_per_s:.0f}"}
        self._progress.update(self._task, completed=stats.done, **fields)

    def finish(self, stats: BulkStats) -> None:
        if self._progress is not None:
            self.update(stats)
            self._progress.stop()
            self._progress = None


def default_progress() -> ProgressReporter:
    """A bar on a terminal, log lines otherwise."""
    return RichProgress() if sys.stderr.isatty() else LogProgress()
