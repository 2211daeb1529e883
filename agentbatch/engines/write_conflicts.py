"""Delta write conflicts: which statement failures a retry resolves, and running one again.

Delta commits optimistically: a MERGE (or a CREATE OR REPLACE reading its table) that another
run's commit to the same table overtook fails whole and changes nothing, and Databricks' message
says to retry the operation (docs.databricks.com optimizations/isolation-level; the
error-messages pages of the classes below). agentbatch's writes are
idempotent by key and re-read the table when they run again, so running the statement again
gives the table both runs' answers, as if the runs had written one after the other. The
databricks-sql engine and the spark engine (on Databricks, where tables are Delta) both run their
statements through `retrying`.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable

from agentbatch.errors import EngineError

log = logging.getLogger(__name__)

# Error classes of a commit conflict: the first three and DELTA_PROTOCOL_CHANGED have pages in
# Databricks' error-messages reference (SQLSTATE 2D521); the others are named after Delta's
# exceptions (ASSUMPTION). Older runtimes print the exception's name instead of a class.
_CLASSES = frozenset(
    {
        "DELTA_CONCURRENT_APPEND",
        "DELTA_CONCURRENT_DELETE_READ",
        "DELTA_CONCURRENT_DELETE_DELETE",
        "DELTA_CONCURRENT_TRANSACTION",
        "DELTA_CONCURRENT_WRITE",
        "DELTA_METADATA_CHANGED",
        "DELTA_PROTOCOL_CHANGED",
    }
)
_ERROR_CLASS = re.compile(r"\[([A-Z][A-Z0-9_]*)(?:\.[A-Z0-9_]+)*\]")
_SQLSTATE = re.compile(r"SQLSTATE: 2D521\s*$")  # the message's own, at its end
_EXCEPTION = re.compile(
    r"\b(Concurrent(?:Append|DeleteRead|DeleteDelete|Transaction|Write)Exception"
    r"|MetadataChangedException|ProtocolChangedException)\b"
)
ATTEMPTS = 5  # a statement runs at most this many times
BACKOFF_S = 1.0  # the first wait's upper bound; doubled each time, capped at 30 s


def write_conflict(message: str) -> str | None:
    """The conflict a failed statement's message names, or None for any other failure. A message
    with an error class is judged by its class (and SQLSTATE) alone: a user's text quoted in
    another error may hold any words."""
    found = _ERROR_CLASS.search(message)
    if found is not None:
        if found.group(1) in _CLASSES:
            return found.group(1)
        return "SQLSTATE 2D521" if _SQLSTATE.search(message) else None
    named = _EXCEPTION.search(message)
    return named.group(1) if named is not None else None


def backoff_s(attempt: int, base_s: float = BACKOFF_S) -> float:
    """How long to wait before attempt `attempt + 1`: a random share of a doubling bound, so
    two runs that conflicted do not meet again at once."""
    return random.uniform(0.0, min(base_s * 2 ** (attempt - 1), 30.0))


def retrying(
    statement: Callable[[], object],
    *,
    engine: str,
    attempts: int = ATTEMPTS,
    base_s: float = BACKOFF_S,
) -> None:
    """Run `statement`; one that fails a write conflict is run again after a random wait, at
    most `attempts` times in all. Any other failure, or the last conflict, is raised."""
    attempt = 1
    while True:
        try:
            statement()
            return
        except EngineError as err:
            conflict = write_conflict(str(err))
            if conflict is None:
                raise
            if attempt >= attempts:
                raise EngineError(
                    f"{err} (another run kept writing the same table: {attempt} attempts "
                    "failed; run again: answers the REST fallback received wait in its "
                    "checkpoint)"
                ) from None
        # Another run committed to the table meanwhile; the failed statement changed nothing.
        # (A push-down statement's ai_query answers went with it: run again, it calls the
        # endpoint for the rows still not done.)
        wait = backoff_s(attempt, base_s)
        log.warning(
            "%s: %s (another run wrote the same table); running the statement again in %.1f s "
            "(attempt %d of %d)",
            engine,
            conflict,
            wait,
            attempt + 1,
            attempts,
        )
        time.sleep(wait)
        attempt += 1
