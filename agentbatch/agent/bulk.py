"""The bulk runner: every input row through the agent, every answer into the ledger.

Structured concurrency (tasks.run_all): one producer reads input batches and skips rows the
ledger already answered; a bounded queue feeds a fixed set of workers whose calls are admitted by
the adaptive limiter; ONE writer group-commits completed rows to the ledger: the first answer
after a commit opens a commit window (COMMIT_WINDOW_S) and everything completed within it is one
commit. A kill re-sends at most the calls in flight and the answers of the last window. Memory is
flat in the number of rows.

An endpoint unusable for the whole run (auth refused, no permission, app gone, unreachable) stops
the run with AgentError; answers already received are committed first. Row failures are values in
the `error` column (the facade raises for `agent.fail_on_error` once they are written).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentbatch.agent.bodies import BodyBuilder
from agentbatch.agent.builtin import run_instant
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.content import (
    FILE_COLUMN,
    FILE_NAME_COLUMN,
    RowFile,
    concurrency_ceiling,
)
from agentbatch.agent.endpoints import ConfigFactory, Endpoint, default_config, resolve_endpoint
from agentbatch.agent.handoff import CommitBuffer, RowFeed
from agentbatch.agent.ledger import CheckpointRefused, Ledger
from agentbatch.agent.limiter import DEFAULT_CEILING, INITIAL_LIMIT, Limiter
from agentbatch.agent.progress import ProgressReporter
from agentbatch.agent.redact import safe_url
from agentbatch.agent.response_format import (
    ResponseFormat,
    ResponseFormatError,
    parse_response_format,
)
from agentbatch.agent.rows import (
    RowResult,
    assemble,
    check_input,
    count_reused,
    error_text,
    passthrough_of,
)
from agentbatch.agent.spend import SpendGuard
from agentbatch.agent.stats import BulkStats
from agentbatch.agent.tasks import run_all, run_sync
from agentbatch.agent.transport import AiohttpTransport, Transport
from agentbatch.agent.worker import Caller, Outcome
from agentbatch.errors import AgentError, UsageError
from agentbatch.results import FINGERPRINT_COLUMN, REQUEST_COLUMN

if TYPE_CHECKING:
    import pyarrow as pa


log = logging.getLogger(__name__)

Batches = Iterable["pa.RecordBatch"] | AsyncIterable["pa.RecordBatch"]

# Largest group commit; more completed rows wait for the next one.
MAX_COMMIT_ROWS = 5_000
# How long the first answer after a commit waits for others to share its commit. Commits are
# the per-row CPU cost of a fast agent (Arrow IPC, a SQLite transaction, a thread hop each):
# ten a second at most, whatever the rate. The bound this sets: a kill re-sends at most the calls
# in flight and the answers received in the last COMMIT_WINDOW_S (plus a commit being written).
COMMIT_WINDOW_S = 0.1
# Consecutive rows that end unreachable (connection errors, timeouts, 502/503/504 after all
# retries) with no success in between: the endpoint is down, stop instead of failing every row.
UNREACHABLE_ROWS = 32


def _load_what_commits_use() -> None:
    """Before the first call: the first `take` of an Arrow batch imports pandas (about 0.4 s).
    Paid by the first commit, it held the answers of several commit windows (and, holding the
    GIL, the calls) out of the ledger, past the bound a kill keeps to."""
    import pyarrow as pa

    # RecordBatch.from_pydict: pa.record_batch(dict) needs pyarrow 15, the floor is 14.
    pa.RecordBatch.from_pydict({"k": pa.array([0], pa.int64())}).take(pa.array([0], pa.int64()))


@dataclass(eq=False)
class _Source:
    """An input batch's passthrough columns, kept until its rows are committed."""

    passthrough: pa.RecordBatch


@dataclass(slots=True)  # one per row: a frozen dataclass's __init__ costs 3x
class _Row:
    source: _Source
    index: int
    request: str | None
    fingerprint: str | None
    file: RowFile | None = None


async def run_bulk(
    batches: Batches,
    *,
    call: CallSpec,
    key: str,
    ledger: Ledger,
    endpoint_overrides: Mapping[str, str] | None = None,
    retry_errors: bool = False,
    reuse: bool = True,
    progress: ProgressReporter | None = None,
    transport: Transport | None = None,
    config_factory: ConfigFactory = default_config,
    total_rows: int | None = None,
    rng: random.Random | None = None,
    budget: SpendGuard | None = None,
    limiter: Limiter | None = None,
    stats: BulkStats | None = None,
    endpoint: Endpoint | None = None,
) -> BulkStats:
    """Answer every input row, recording each answer in `ledger`.

    Input batches have the key column, passthrough columns, `_request` and `request_fingerprint`:
    the rows the target does not hold yet. With `reuse`, a row the ledger answered before under
    the same fingerprint is taken from there instead of calling again (`--full-refresh`: no reuse).
    With a `budget`, each row is admitted by it before it is sent (the built-in agent is free).
    `limiter`: one made by the caller (a Spark task's, following a shared budget); by default
    one from the call's caps. `stats`: the caller's, to read also when the run raises.
    `endpoint`: `call.endpoint` resolved by the caller (`resolve_call_endpoint`); by default
    resolved here.
    """
    fmt = _response_format(call)
    if endpoint is None:
        endpoint, _ = await asyncio.gather(
            asyncio.to_thread(
                resolve_call_endpoint, call, endpoint_overrides, config_factory=config_factory
            ),
            asyncio.to_thread(_load_what_commits_use),
        )
    else:
        await asyncio.to_thread(_load_what_commits_use)
    assert endpoint is not None
    stats = stats if stats is not None else BulkStats()
    started = time.monotonic()
    if progress is not None:
        progress.start(total_rows)
    try:
        if endpoint.kind == "builtin":
            await run_instant(
                _aiter(batches), key, ledger, fmt, retry_errors, reuse, stats, started, progress
            )
        else:
            run = _HttpRun(
                call, endpoint, fmt, key, ledger, retry_errors, reuse, stats, progress, rng, limiter
            )
            run.budget = budget
            run.total_rows = total_rows
            own_transport = transport is None
            active = transport or AiohttpTransport(max_connections=run.limiter.cap + 16)
            try:
                await run.run(batches, active, started)
            finally:
                if own_transport:
                    await active.close()
    finally:
        stats.wall_s = time.monotonic() - started
        if progress is not None:
            progress.finish(stats)
    return stats


def resolve_call_endpoint(
    call: CallSpec,
    overrides: Mapping[str, str] | None = None,
    *,
    config_factory: ConfigFactory = default_config,
) -> Endpoint:
    """Where `call`'s rows go, with its credentials: raises ConfigError or AgentError when it
    cannot be reached (no workspace credentials), before anything is created or sent."""
    return resolve_endpoint(
        call.endpoint,
        api=call.api,
        overrides=overrides,
        databricks_options=call.databricks_options,
        config_factory=config_factory,
    )


def run_bulk_sync(batches: Batches, **kwargs: Any) -> BulkStats:
    """`run_bulk` for callers without an event loop."""
    return run_sync(run_bulk(batches, **kwargs))


def _response_format(call: CallSpec) -> ResponseFormat | None:
    if call.response_format is None:
        return None
    try:
        return parse_response_format(call.response_format)
    except ResponseFormatError as e:
        raise UsageError(str(e)) from None


async def _aiter(batches: Batches) -> AsyncIterator[pa.RecordBatch]:
    if isinstance(batches, AsyncIterable):
        async for batch in batches:
            yield batch
        return
    # A synchronous source (an engine cursor) may block: read it off the event loop.
    iterator = iter(batches)
    while True:
        batch = await asyncio.to_thread(next, iterator, None)
        if batch is None:
            return
        yield batch


# --- HTTP: producer, workers, writer --------------------------------------------------------


class _HttpRun:
    def __init__(
        self,
        call: CallSpec,
        endpoint: Endpoint,
        fmt: ResponseFormat | None,
        key: str,
        ledger: Ledger,
        retry_errors: bool,
        reuse: bool,
        stats: BulkStats,
        progress: ProgressReporter | None,
        rng: random.Random | None,
        limiter: Limiter | None = None,
    ) -> None:
        self.call = call
        self.key = key
        self.ledger = ledger
        self.retry_errors = retry_errors
        self.stats = stats
        self.progress = progress
        self.response_type = fmt.arrow_type if fmt is not None else None
        self.limiter = limiter or Limiter(
            max_concurrency=call.max_concurrency,
            requests_per_second=call.requests_per_second,
            # A concurrency the user asked for is where to start (no slow start up to it); the
            # limiter still backs off from it on 429s, 503s and timeouts.
            initial=call.max_concurrency or INITIAL_LIMIT,
            ceiling=concurrency_ceiling(call.files, DEFAULT_CEILING, call.max_concurrency),
        )
        # Nothing answered before: no lookups (source keys are unique, checked before the run).
        self.lookup = reuse and getattr(ledger, "has_answers", True)  # stand-ins may lack it
        self.workers = self.limiter.cap
        self.bodies = BodyBuilder(call, model=endpoint.model, response_format=fmt)
        self.endpoint = endpoint
        self.fmt = fmt
        self.rng = rng or random.Random()
        self.rows: RowFeed[_Row] = RowFeed(depth=self.workers * 2)
        # Answers waiting for their commit: room for a whole commit, so workers do not wait
        # for the writer while a commit window is open.
        self.answers: CommitBuffer[tuple[_Row, Outcome]] = CommitBuffer(MAX_COMMIT_ROWS)
        self.stop = asyncio.Event()
        self.fatal: AgentError | CheckpointRefused | None = None
        self.input_error: Exception | None = None
        # Consecutive unreachable failures, not yet handed to the writer.
        self.held: list[tuple[_Row, Outcome]] = []
        self.started = 0.0
        self.budget: SpendGuard | None = None
        # The calls out right now (the budget counts them before each call), once running.
        self.caller: Caller | None = None
        # Rows to answer (an upper bound, when the caller knows it), rows handed to the workers,
        # rows they finished with: what the limiter is told is left (no probing at the end).
        self.total_rows: int | None = None
        self.handed_out = 0
        self.finished = 0
        self.input_done = False
        self.limiter.remaining = self._rows_left

    async def run(self, batches: Batches, transport: Transport, started: float) -> None:
        self.started = started
        caller = Caller(
            call=self.call,
            endpoint=self.endpoint,
            fmt=self.fmt,
            limiter=self.limiter,
            transport=transport,
            stats=self.stats,
            rng=self.rng,
            stop=self.stop,
            # Right before each call, only when a token or cost limit must judge the calls in
            # flight; any other stop is seen by the caller through `stop`.
            may_send=self._may_send if _watches_spend(self.budget) else None,
        )
        self.caller = caller
        await run_all([self._produce(batches), self._write(), self._work_all(caller)])
        if self.input_error is not None:
            raise self.input_error
        if self.fatal is not None:
            raise self.fatal
        if self.budget is not None and self.budget.cut_short:
            raise self.budget.stopped  # type: ignore[misc]

    async def _produce(self, batches: Batches) -> None:
        try:
            async for batch in _aiter(batches):
                if self.stop.is_set():
                    break
                check_input(batch, self.key)
                self.stats.rows_seen += batch.num_rows
                todo = batch
                if self.lookup:
                    reused, todo = await asyncio.to_thread(
                        self.ledger.reuse,
                        batch,
                        self.response_type,
                        retry_errors=self.retry_errors,
                    )
                    if reused is not None:
                        count_reused(self.stats, reused, self.progress)
                if todo.num_rows == 0:
                    continue
                rows = _rows_of(todo)
                step = self.rows.depth
                for start in range(0, len(rows), step):
                    if self.stop.is_set():
                        break  # a stopped run hands out nothing more (workers drain the rest)
                    chunk = rows[start : start + step]
                    self.handed_out += len(chunk)
                    await self.rows.put_all(chunk)
            self.input_done = True
        except Exception as e:
            # The input failed: calls already in flight finish and are committed (they are paid
            # for), nothing new is sent, then the run fails with the input's error.
            self.input_error = e
            self.stop.set()
        # Not on cancellation: then every task is being cancelled.
        self.rows.close()

    async def _work_all(self, caller: Caller) -> None:
        await run_all([self._work(caller) for _ in range(self.workers)])
        if not self.stop.is_set():
            await self._release_held()  # too few to mean the endpoint is down: row errors
        self.answers.close()

    async def _work(self, caller: Caller) -> None:
        rows = self.rows
        answers = self.answers
        # Per row, without a coroutine each when nothing waits (most rows of a run): the row's
        # take, the budget's turn, the answer's hand-off to the writer.
        turn_now = getattr(self.budget, "turn_now", None)
        while True:
            row = rows.take_nowait()
            if row is None:
                row = await rows.take()
                if row is None:
                    return
            # A NULL request is answered with its row error, without a call: the budget is for
            # calls, so it never holds or counts such a row (not even for a moment).
            budget = self.budget if row.request is not None else None
            if self.stop.is_set():
                if budget is not None:
                    budget.release()
                continue  # drain without calling, so the producer never blocks
            if budget is not None and not budget.admit():
                self._budget_stop(budget)
                continue
            if budget is not None and (turn_now is None or not turn_now()):
                await _turn(budget)
            try:
                outcome = await caller.call(self.bodies, row.request, row.file)
            except AgentError as e:
                self.finished += 1
                if budget is not None:
                    budget.release()
                self._abort(e)
                continue
            self.finished += 1
            if outcome is None:
                if budget is not None:
                    budget.release()
                continue  # the run stopped first; the row stays unanswered
            if budget is not None and not outcome.attempts:
                # Never sent (an unusable request): paid nothing and says nothing of the agent,
                # so it counts neither toward max_rows nor the error rate.
                budget.unpaid()
            elif budget is not None:
                failure = outcome.failure
                if failure is None:  # by position: per row, a keyword call costs twice as much
                    sending = budget.record(
                        None, False, outcome.input_tokens, outcome.output_tokens
                    )
                else:
                    sending = _record(budget, outcome)
                if not sending:
                    self._budget_stop(budget)
            if outcome.failure is None and not self.held and answers.put_nowait((row, outcome)):
                continue  # what _deliver does with an answer, when the buffer has room
            await self._deliver(row, outcome)

    def _rows_left(self) -> int | None:
        """Rows not answered yet, when known: exactly once the input is read, else from the
        caller's total."""
        if self.input_done:
            return self.handed_out - self.finished
        if self.total_rows is None:
            return None
        return max(self.total_rows - self.stats.reused - self.finished, 0)

    def _may_send(self) -> bool:
        """Right before a call is sent: would it pass the budget, with the calls in flight?"""
        budget = self.budget
        assert budget is not None
        # The calls out now: not the requests sent minus those answered, which a redirect
        # followed (two requests, one call) or a row waiting to retry would count as out.
        out = self.caller.calls_out if self.caller is not None else 0
        if budget.may_send(out):
            return True
        self._budget_stop(budget)
        return False

    def _budget_stop(self, budget: SpendGuard) -> None:
        """The budget is reached: nothing more is sent; the calls in flight finish."""
        if not self.stop.is_set():
            log.error("stopping the run: %s", budget.stopped)
        self.stop.set()

    async def _deliver(self, row: _Row, outcome: Outcome) -> None:
        """Pass an outcome to the writer; unreachable failures are held back while they could
        still turn out to mean "the endpoint is down" (then they are not rows' answers)."""
        failure = outcome.failure
        if failure is not None and (
            failure.kind in ("connection", "timeout")
            or (failure.kind == "http" and failure.status in (502, 503, 504))
        ):
            self.held.append((row, outcome))
            if len(self.held) >= UNREACHABLE_ROWS:
                self.held.clear()
                self._abort(
                    AgentError(
                        f"endpoint {safe_url(self.endpoint.name)!r} looks unreachable: "
                        f"{UNREACHABLE_ROWS} rows in a row failed after all retries; "
                        f"last error: {failure.message}"
                    )
                )
            return
        if self.held:
            await self._release_held()
        await self.answers.put((row, outcome))

    async def _release_held(self) -> None:
        held, self.held = self.held, []
        for item in held:
            await self.answers.put(item)

    def _abort(self, error: AgentError | CheckpointRefused) -> None:
        if self.fatal is None:
            self.fatal = error
            log.error("stopping the run: %s", error)
        self.stop.set()

    async def _write(self) -> None:
        """Group-commit answers: the first answer after a commit opens a window of
        COMMIT_WINDOW_S; everything that completes within it is one commit (at most
        MAX_COMMIT_ROWS). A kill loses at most the answers of the last window (and a commit
        being written at that moment), never a committed one."""
        answers = self.answers
        try:
            while not (answers.closed and not len(answers)):
                await answers.wait_for_any()
                await answers.wait_for_window(COMMIT_WINDOW_S)
                batch = answers.take()
                if batch:
                    try:
                        await asyncio.to_thread(self._commit, batch)
                    except CheckpointRefused as e:
                        # The ledger keeps these answers and the rest in memory for the
                        # target: the calls in flight finish, nothing more is sent.
                        self._count(batch)
                        self._abort(e)
                        continue
                    except Exception:
                        raise  # the commit failed: these answers are not in the ledger
                    except BaseException:
                        # Cancelled or interrupted while the thread commits: the thread still
                        # finishes the commit, so the run's counts include these answers.
                        self._count(batch)
                        raise
                    self._count(batch)
        except asyncio.CancelledError:
            # The run is being torn down: answers already received must still reach the ledger.
            left = answers.take()
            if left:
                self._commit(left)
                self._count(left)
            raise

    def _commit(self, items: list[tuple[_Row, Outcome]]) -> None:
        import pyarrow as pa

        by_source: dict[int, tuple[_Source, list[int], list[RowResult]]] = {}
        for row, outcome in items:
            entry = by_source.setdefault(id(row.source), (row.source, [], []))
            entry[1].append(row.index)
            entry[2].append(self._row_result(row, outcome))
        parts = [
            assemble(
                source.passthrough.take(pa.array(indices, type=pa.int64())),
                results,
                self.response_type,
            )
            for source, indices, results in by_source.values()
        ]
        table = (
            pa.Table.from_batches(parts)
            if len(parts) == 1
            else pa.concat_tables(
                [pa.Table.from_batches([p]) for p in parts], promote_options="default"
            )
        )
        self.ledger.append(table)

    def _row_result(self, row: _Row, outcome: Outcome) -> RowResult:
        reply = outcome.reply
        failure = outcome.failure
        # In RowResult's field order, not by keyword: per row, a keyword call of its eleven
        # fields costs 2.5x a positional one.
        return RowResult(
            (reply.value if self.response_type is not None else reply.text)
            if reply is not None
            else None,
            error_text(failure) if failure is not None else None,
            outcome.http_status,
            outcome.attempts,
            outcome.latency_ms,
            outcome.input_tokens,
            outcome.output_tokens,
            reply.trace_id if reply else None,
            outcome.custom_outputs_json,
            row.fingerprint,
            outcome.answered_at_us,
        )

    def _count(self, items: list[tuple[_Row, Outcome]]) -> None:
        stats = self.stats
        for _, outcome in items:
            if outcome.attempts:
                stats.sent += 1
            if outcome.latency_ms is not None:
                stats.latency.add(outcome.latency_ms)
            # A reply paid for counts, answer or not (a content filter, a response_format it
            # does not match).
            stats.input_tokens += outcome.input_tokens or 0
            stats.output_tokens += outcome.output_tokens or 0
            if outcome.failure is None:
                stats.ok += 1
            else:
                stats.errors += 1
                stats.errors_by_kind[outcome.failure.stats_key] += 1
        stats.peak_concurrency = self.limiter.peak_inflight
        stats.wall_s = time.monotonic() - self.started
        if self.progress is not None:
            self.progress.update(stats)


def _watches_spend(budget: SpendGuard | None) -> bool:
    return budget is not None and bool(getattr(budget, "watches_spend", True))


async def _turn(budget: SpendGuard) -> None:
    """Wait until the guard lets an admitted row's call go (a guard without `turn` never holds
    one): a token or cost limit holds calls while nothing tells what a row costs."""
    turn = getattr(budget, "turn", None)
    if turn is not None:
        await turn()


def _rows_of(batch: pa.RecordBatch) -> list[_Row]:
    source = _Source(passthrough_of(batch))
    requests = batch.column(REQUEST_COLUMN).to_pylist()
    fingerprints = batch.column(FINGERPRINT_COLUMN).to_pylist()
    files: Sequence[RowFile | None] = _row_files(batch) or [None] * len(requests)
    return [
        _Row(source, index, request, fingerprint, file)
        for index, (request, fingerprint, file) in enumerate(
            zip(requests, fingerprints, files, strict=True)
        )
    ]


def _row_files(batch: pa.RecordBatch) -> list[RowFile] | None:
    """Each row's file (a job with `files:`), else None. The bytes leave the batch here."""
    names = batch.schema.names
    if FILE_COLUMN not in names:
        return None
    contents = batch.column(FILE_COLUMN).to_pylist()
    file_names = (
        batch.column(FILE_NAME_COLUMN).to_pylist()
        if FILE_NAME_COLUMN in names
        else [None] * len(contents)
    )
    return [RowFile(c, n) for c, n in zip(contents, file_names, strict=True)]


def _record(budget: SpendGuard, outcome: Outcome) -> bool:
    failure = outcome.failure
    return budget.record(
        error_text(failure) if failure is not None else None,
        failure is not None and not failure.retryable,
        outcome.input_tokens,
        outcome.output_tokens,
    )


__all__ = ["Batches", "resolve_call_endpoint", "run_bulk", "run_bulk_sync"]
