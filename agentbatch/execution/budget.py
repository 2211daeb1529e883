"""What a run may spend, and the guard that keeps it there.

Limits come from the job's `budget:` and the target's settings (`--max-rows`, `--max-tokens`,
`--max-cost`, `--max-error-rate` on the command line are target settings of the run; a setting
replaces the job's value). Prices come from the job's `agent.price`, else `prices:` in
`agentbatch.yml`, keyed by the job's endpoint.

Two checks, one object:

- before sending, `check_before(rows, per_row)`: a run whose rows to send, or whose projected
  tokens or cost (rows times the per-row figures of the last `agentbatch estimate`), pass a limit
  stops with BudgetError and sends nothing;
- while sending, the bulk runner asks `admit()` before each row (at most `max_rows` are sent),
  awaits `turn()` before its call, asks `may_send(in_flight)` right before each call goes out, and
  reports each outcome with `record(...)`: sending stops when the tokens or cost spent (plus what
  the calls in flight are expected to spend) reach a limit, or when the share of rows failed for
  good passes `max_error_rate` after `error_rate_min_rows` answered rows. Rows waiting for a slot
  are then not sent; the calls in flight finish. When rows were left unsent (`cut_short`),
  `stopped` is the error the run raises once everything answered is written.

What a call is expected to use is the mean of the rows answered so far with their usage, else
the estimate's. With neither, nothing can be projected: under a token or cost limit one call
goes at a time (`turn()`) until an answer reports its usage. So each call goes only while
spent + (calls in flight + 1) x expected stays within the limit, and a run passes its limit only
by what its last calls in flight use beyond the expected figure (rows using the same never pass
it), or by its first answered row alone when that one costs more than the limit. An agent that
answers without reporting usage cannot be guarded by tokens or cost: the guard stops the run then
instead of counting the answer as free.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.errors import BudgetError, ErrorRateError, SpecError, UsageError

if TYPE_CHECKING:
    from agentbatch.spec.models import Job, Price

DEFAULT_MAX_ERROR_RATE = 0.5
DEFAULT_ERROR_RATE_MIN_ROWS = 20
# The settings (and flags) a run reads its limits from.
LIMIT_KEYS = ("max_rows", "max_tokens", "max_cost", "max_error_rate", "error_rate_min_rows")
_FLAGS = {key: "--" + key.replace("_", "-") for key in LIMIT_KEYS}


@dataclass(frozen=True)
class Limits:
    max_rows: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    error_rate_min_rows: int = DEFAULT_ERROR_RATE_MIN_ROWS


@dataclass(frozen=True)
class PerRow:
    """Mean tokens per answered row (from an estimate's sample, or the rows answered so far)."""

    input_tokens: float
    output_tokens: float

    @property
    def tokens(self) -> float:
        return self.input_tokens + self.output_tokens


def cost_of(price: Price | None, input_tokens: float, output_tokens: float) -> float | None:
    """The cost of these tokens at `price` (None without a price)."""
    if price is None:
        return None
    return (input_tokens * price.input_per_million + output_tokens * price.output_per_million) / 1e6


def limits_of(job: Job, settings: Mapping[str, Any]) -> Limits:
    """The run's limits: each target setting (or flag) replaces the job's `budget:` value."""
    declared = job.budget.model_dump()
    values: dict[str, Any] = {}
    for key in LIMIT_KEYS:
        raw = settings.get(key)
        values[key] = _setting(key, raw) if raw is not None else declared.get(key)
    if values["max_error_rate"] is None:
        values["max_error_rate"] = DEFAULT_MAX_ERROR_RATE
    if values["error_rate_min_rows"] is None:
        values["error_rate_min_rows"] = DEFAULT_ERROR_RATE_MIN_ROWS
    return Limits(**values)


def _setting(key: str, raw: Any) -> int | float:
    where = f"{_FLAGS[key]} (setting {key})"
    integer = key in ("max_rows", "max_tokens", "error_rate_min_rows")
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = int(raw) if integer else float(raw)
        if integer and isinstance(raw, float) and not raw.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"{where}: {raw!r} is not {kind}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{where}: must be more than 0, not {raw!r}")
    if key == "max_error_rate" and value > 1:
        raise UsageError(f"{where}: is a share of rows, at most 1, not {raw!r}")
    return value


def price_of(job: Job, root: Path) -> Price | None:
    """The job's `agent.price`, else its endpoint's entry in `agentbatch.yml` `prices:`."""
    if job.agent.price is not None:
        return job.agent.price
    return project_prices(root).get(job.agent.endpoint)


def project_prices(root: Path) -> dict[str, Price]:
    """`prices:` of the project's `agentbatch.yml`: endpoint -> price per million tokens."""
    from pydantic import ValidationError

    from agentbatch.planning.targets import PROJECT_FILE
    from agentbatch.spec.models import Price
    from agentbatch.spec.yaml_source import load_yaml

    path = root / PROJECT_FILE
    if not path.exists():
        return {}
    doc = load_yaml(path.read_text(encoding="utf-8"), str(path))
    raw = doc.value.get("prices", {}) if isinstance(doc.value, dict) else {}
    if not isinstance(raw, dict):
        raise SpecError(f"{doc.where(('prices',))}: prices: must map endpoint names to prices")
    prices: dict[str, Price] = {}
    for endpoint, value in raw.items():
        try:
            prices[str(endpoint)] = Price.model_validate(value)
        except ValidationError as err:
            problem = err.errors(include_url=False)[0]
            field = ".".join(str(p) for p in problem.get("loc", ()))
            where = doc.where(("prices", endpoint))
            raise SpecError(
                f"{where}: prices.{endpoint}{'.' + field if field else ''}: {problem['msg']}"
            ) from None
    return prices


class Budget:
    """The guard of one run. The bulk runner calls `admit()` and `turn()` before sending a row
    and `record()` (or `release()`, for a row left unanswered, or `unpaid()`) after; everything
    runs on one event loop."""

    def __init__(
        self, limits: Limits, price: Price | None = None, per_row: PerRow | None = None
    ) -> None:
        self.limits = limits
        self.price = price
        self.per_row = per_row
        self.sent = 0
        self.unsent = 0
        self.answered = 0
        self.failed = 0
        self.ok = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.errors: Counter[str] = Counter()
        # Why sending stopped: the limit and its key, or the error-rate verdict.
        self._reason: tuple[str, str] | None = None
        self._broken_at: tuple[int, int] | None = None
        # The limit stopped because an answer came without its usage (it cannot be judged).
        self._unmeasured = False
        # Answers that reported their usage: what the calls to come are projected from.
        self._measured = 0
        # Rows answered without a call (`unpaid`): the summary counts them among its rows.
        self._unpaid = 0
        # Rows past `turn()` not settled yet, and the signal that one settled (set only while
        # a row waits in `turn()`: one settling each row would cost a call each).
        self._calling = 0
        self._settled = asyncio.Event()
        self._waiting = 0
        # Whether `record` has a token or cost limit to judge (fixed for the run).
        self._judges_spend = limits.max_tokens is not None or limits.max_cost is not None

    @property
    def stopped(self) -> BudgetError | None:
        """Why sending stopped, saying how far the run got (None while it may send)."""
        if self._broken_at is not None:
            return self._error_rate()
        if self._reason is not None:
            return BudgetError(self._how_far(*self._reason))
        return None

    # --- before sending ---------------------------------------------------------------------

    def check_before(self, rows: int, per_row: PerRow | None = None) -> None:
        """Raise BudgetError when sending `rows` would pass a limit (nothing is sent then)."""
        limits = self.limits
        if limits.max_rows is not None and rows > limits.max_rows:
            raise BudgetError(
                f"the run would send {rows:,} row(s), over max_rows {limits.max_rows:,} "
                f"({_FLAGS['max_rows']} or budget.max_rows); nothing was sent: raise the "
                "budget, or send fewer rows with --limit"
            )
        per_row = per_row or self.per_row
        if per_row is None:
            return
        tokens = rows * per_row.tokens
        if limits.max_tokens is not None and tokens > limits.max_tokens:
            raise BudgetError(
                f"the run would use about {tokens:,.0f} tokens ({rows:,} row(s) x "
                f"{per_row.tokens:,.1f} per row, from the last estimate), over max_tokens "
                f"{limits.max_tokens:,} ({_FLAGS['max_tokens']} or budget.max_tokens); "
                "nothing was sent"
            )
        cost = cost_of(self.price, rows * per_row.input_tokens, rows * per_row.output_tokens)
        if limits.max_cost is not None and cost is not None and cost > limits.max_cost:
            raise BudgetError(
                f"the run would cost about {cost:,.4g} ({rows:,} row(s), from the last "
                f"estimate), over max_cost {limits.max_cost:,.4g} ({_FLAGS['max_cost']} or "
                "budget.max_cost); nothing was sent"
            )

    # --- while sending ---------------------------------------------------------------------

    def admit(self) -> bool:
        """Whether the next row may be sent: no limit reached yet, and fewer than `max_rows`
        rows sent. A refused row is left for the next run."""
        max_rows = self.limits.max_rows
        if self._reason is None and self._broken_at is None:  # `_sending()`, per row
            if max_rows is None or self.sent < max_rows:
                self.sent += 1
                return True
            self._reason = (f"max_rows {max_rows:,}", "max_rows")
        self.unsent += 1
        return False

    async def turn(self) -> None:
        """Before an admitted row's call: wait while a token or cost limit must judge calls
        that nothing tells the cost of (no estimate, no answer with its usage yet) and another
        row's call is out. One call finds out what a row costs before a whole wave is paid for
        blind; a call that fails or is retried holds the others only until its row settles.
        Without such a limit, or once a row's cost is known, nothing waits."""
        while not self.turn_now():
            self._settled.clear()
            self._waiting += 1
            try:
                await self._settled.wait()
            finally:
                self._waiting -= 1

    def turn_now(self) -> bool:
        """`turn()` when its row need not wait (the runner asks this first, for most rows, and
        awaits `turn()` only when it is False): True, the row's turn taken; False, nothing done."""
        if self._calling and not self._measured and self._blind():
            return False
        self._calling += 1
        return True

    def release(self) -> None:
        """An admitted row was not sent after all (the run stopped while it waited)."""
        self.unsent += 1
        self._settle()

    def unpaid(self) -> None:
        """An admitted row was answered without a call (its request could not be built)."""
        self.sent -= 1
        self._unpaid += 1
        self._settle()

    def record(
        self,
        error: str | None,
        permanent: bool,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> bool:
        """The outcome of an admitted row: its error text (None for an answer) and usage. Sets
        `stopped` once a limit is reached or too many rows failed, or when an answer without
        its usage leaves a token or cost limit unguarded: then nothing more is sent, and the
        calls in flight finish. Returns whether it may still send (`stopped is None`).

        Called once a row (by position: a keyword call costs twice as much), so the checks
        that cannot change anything are skipped: `_broken` without a failure, `_settle`'s
        wake-up without a row waiting."""
        self.answered += 1
        measured = input_tokens is not None or output_tokens is not None
        if measured:
            self._measured += 1
            self.input_tokens += input_tokens or 0
            self.output_tokens += output_tokens or 0
        if error is None:
            self.ok += 1
        elif permanent:
            self.failed += 1
            self.errors[error[:300]] += 1
        if (
            self._reason is None
            and self._broken_at is None
            and not (self.failed and self._broken())
        ):
            if error is None and not measured and self.watches_spend:
                self._reason = self._watched()
                self._unmeasured = True
            elif self._judges_spend:
                self._reason = self._spent_up(0)  # (without either, it has nothing to judge)
        if self._calling > 0:  # `_settle()`, per row
            self._calling -= 1
        if self._waiting:
            self._settled.set()
        return self._reason is None and self._broken_at is None

    def may_send(self, in_flight: int) -> bool:
        """Right before a call is sent: whether what was spent, plus what the calls in flight and
        this one are expected to spend, stays within the limits (so a run stops at its budget,
        not one burst of calls past it)."""
        if self._sending() and not self._broken():
            self._reason = self._spent_up(in_flight + 1)
        return self._sending()

    @property
    def watches_spend(self) -> bool:
        """Whether `may_send` can refuse anything `record` has not stopped already: only a token
        or cost limit judges the calls in flight (the bulk runner skips it otherwise)."""
        limits = self.limits
        return limits.max_tokens is not None or (
            limits.max_cost is not None and self.price is not None
        )

    @property
    def cut_short(self) -> bool:
        """Whether the guard stopped the run before every row was sent."""
        return self.stopped is not None and self.unsent > 0

    @property
    def cost(self) -> float | None:
        return cost_of(self.price, self.input_tokens, self.output_tokens)

    def _expected(self) -> PerRow:
        """Tokens a call is expected to use: the mean of the answers so far that reported their
        usage, else the estimate (with neither, `turn()` lets one call go at a time)."""
        if self._measured:
            measured = self._measured
            return PerRow(self.input_tokens / measured, self.output_tokens / measured)
        return self.per_row or PerRow(0.0, 0.0)

    def _blind(self) -> bool:
        """Whether a token or cost limit must judge calls while nothing tells what one costs."""
        # The cheapest test first: asked for every row while calls are out.
        return (
            not self._measured and self.per_row is None and self._sending() and self.watches_spend
        )

    def _settle(self) -> None:
        # Rows drained after a stop are released without a turn: never below none out.
        if self._calling > 0:
            self._calling -= 1
        if self._waiting:
            self._settled.set()

    def _watched(self) -> tuple[str, str]:
        """The token or cost limit the guard judges calls by (see `watches_spend`)."""
        if self.limits.max_tokens is not None:
            return f"max_tokens {self.limits.max_tokens:,}", "max_tokens"
        return f"max_cost {self.limits.max_cost:,.4g}", "max_cost"

    def _spent_up(self, calls: int) -> tuple[str, str] | None:
        """Whether what was spent, plus what `calls` more calls are expected to spend, passes a
        limit (with no call to come: reaches it)."""
        limits = self.limits
        if limits.max_tokens is None and limits.max_cost is None:
            return None  # per row, on every answer: no estimate to make
        ahead = self._expected()
        if limits.max_tokens is not None:
            tokens = self.input_tokens + self.output_tokens + calls * ahead.tokens
            if tokens > limits.max_tokens or (not calls and tokens >= limits.max_tokens):
                return f"max_tokens {limits.max_tokens:,}", "max_tokens"
        if limits.max_cost is not None and self.price is not None:
            cost = cost_of(
                self.price,
                self.input_tokens + calls * ahead.input_tokens,
                self.output_tokens + calls * ahead.output_tokens,
            )
            if cost is not None and (
                cost > limits.max_cost or (not calls and cost >= limits.max_cost)
            ):
                return f"max_cost {limits.max_cost:,.4g}", "max_cost"
        return None

    def _how_far(self, limit: str, key: str) -> str:
        """Said when sending stops (logged, while calls may still be in flight: "so far") and
        again once the run ends (then its rows are the summary's `rows`)."""
        cost = self.cost
        spent = f"{self.input_tokens + self.output_tokens:,} tokens" + (
            f", cost {cost:,.4g}" if cost is not None else ""
        )
        rows = f"{self.answered + self._unpaid:,} row(s) answered"
        written = "answered rows were written"
        if self._calling:
            rows += " so far"
            written = "the calls in flight finish, then every answered row is written"
        flags = f"{_FLAGS[key]} or budget.{key}"
        if self._unmeasured:
            return (
                f"the agent answered without reporting its token usage, so {limit} ({flags}) "
                f"cannot be guarded: stopped sending; {rows} ({spent} reported); {written}; "
                "limit this agent's runs with --max-rows (budget.max_rows) instead"
            )
        return (
            f"budget reached ({limit}, {flags}): stopped sending; {rows} ({spent}); {written}, "
            "and the next run continues from there"
        )

    def _sending(self) -> bool:
        """`stopped is None`, without building the error (asked for every row)."""
        return self._reason is None and self._broken_at is None

    def _broken(self) -> bool:
        """Whether the share of rows failed for good passed the limit (after the minimum)."""
        limits = self.limits
        if self.answered < limits.error_rate_min_rows or not self.failed:
            return False
        if self.failed / self.answered <= limits.max_error_rate:
            return False
        self._broken_at = (self.failed, self.answered)
        return True

    def _error_rate(self) -> ErrorRateError:
        limits = self.limits
        failed, answered = self._broken_at or (self.failed, self.answered)
        rate = failed / answered
        commonest, count = self.errors.most_common(1)[0]
        return ErrorRateError(
            f"{failed} of {answered} answered rows failed for good ({rate:.0%}, over "
            f"max_error_rate {limits.max_error_rate:g}): stopped sending; the commonest error "
            f"({count} row(s)): {commonest}; answered rows were written (raise "
            "--max-error-rate, or budget.max_error_rate: 1 never stops)"
        )


def load_per_row(path: Path, fingerprint: str) -> PerRow | None:
    """The per-row tokens an estimate of this call (same fingerprint) measured, if any."""
    import json

    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("call_fingerprint") != fingerprint:
            return None
        per_row = saved["per_row"]
        return PerRow(float(per_row["input_tokens"]), float(per_row["output_tokens"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_per_row(path: Path, fingerprint: str, per_row: PerRow, **details: Any) -> None:
    """Keep an estimate's per-row tokens for the runs of the same call that follow."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "call_fingerprint": fingerprint,
        "per_row": {"input_tokens": per_row.input_tokens, "output_tokens": per_row.output_tokens},
        **details,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(saved, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
