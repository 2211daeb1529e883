"""The kind of a push-down row error: ai_query's `errorMessage` read by the REST fallback's rule.

`ai_query(..., failOnError => false)` puts a failed row's message in `errorMessage`, after the
retries ai_query makes itself; the REST fallback stores a failure that outlived its retries as
`[transient]` when its HTTP status is one `retry.should_retry` re-sends (408, 429, 5xx), or when
it was a timeout, so the next run sends the row again. Push-down does the same from the message
(see docs/databricks-behaviour.md for where these shapes come from):

    [REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with code 400, and error ...
    [REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying 10 times; the
    last failed HTTP error code was 429

- a message naming an HTTP status (`code 429`, `code was 503`, `status: 500`): transient when
  `should_retry` retries that status. The first status named decides, so a 400 whose message
  quotes a 503 stays permanent;
- a message naming none: transient when it names a timeout (`timeout`, `timed out`, the
  `..._RETRY_TIMEOUT` class) or rate limiting (`rate limit`, `Too Many Requests`);
- anything else, a 4xx included: permanent, kept until `--retry-errors`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from agentbatch.agent.retry import should_retry
from agentbatch.results import PERMANENT_ERROR, TRANSIENT_ERROR
from agentbatch.sql import quoting
from agentbatch.sql.quoting import Sql

# A status after a word that says it is one; no backslashes, so that the pattern reads the same
# as a Spark SQL literal, in Java regexes and in RE2 (DuckDB).
# Whole words only: `runtime out of memory`, `accurate limit`, `barcode 500` name none.
STATUS_PATTERN = "(?i)(?:^|[^a-z])(?:code|status)(?: was| is)?:? ?([1-5][0-9][0-9])(?:[^0-9]|$)"
WORDING_PATTERN = (
    "(?i)(?:^|[^a-z])"
    "(?:timed?[ -]?outs?|rate[ _-]?limit(?:s|ed|ing)?|too many requests)"
    "(?:[^a-z]|$)"
)


def retryable_statuses() -> frozenset[int]:
    """The HTTP statuses the REST fallback re-sends, hence stores as transient."""
    return frozenset(status for status in range(100, 600) if should_retry(status))


def status_regex(statuses: Iterable[int]) -> str:
    """A regex matching exactly these three-digit statuses: `^(?:408|429|5[0-9][0-9])$`."""
    by_hundred: dict[int, list[int]] = defaultdict(list)
    for status in sorted(set(statuses)):
        by_hundred[status // 100].append(status)
    parts: list[str] = []
    for hundred, members in sorted(by_hundred.items()):
        if len(members) == 100:
            parts.append(f"{hundred}[0-9][0-9]")
        else:
            parts.extend(str(status) for status in members)
    return "^(?:" + "|".join(parts) + ")$"


def transient_sql(message: Sql) -> Sql:
    """TRUE when `message` (ai_query's errorMessage) is a transient failure; else FALSE or NULL."""
    status = Sql(f"regexp_extract({message}, {quoting.literal(STATUS_PATTERN)}, 1)")
    return Sql(
        f"CASE WHEN {status} <> '' "
        f"THEN {status} RLIKE {quoting.literal(status_regex(retryable_statuses()))} "
        f"ELSE {message} RLIKE {quoting.literal(WORDING_PATTERN)} END"
    )


def kind_sql(message: Sql) -> Sql:
    """The `error` column's kind prefix for a row whose failure message is `message`."""
    return Sql(
        f"CASE WHEN {transient_sql(message)} THEN {quoting.literal(TRANSIENT_ERROR)} "
        f"ELSE {quoting.literal(PERMANENT_ERROR)} END"
    )
