"""Delta write conflicts: which statement failures a retry resolves, and when to retry.

Delta commits optimistically: a MERGE (or a CREATE OR REPLACE reading its table) that another
run's commit to the same table overtook fails whole and changes nothing, and Databricks' message
says to retry the operation (docs.databricks.com optimizations/isolation-level; the
error-messages pages of the classes below). agentbatch's writes are
idempotent by key and re-read the table when they run again, so running the statement again
gives the table both runs' answers, as if the runs had written one after the other.
"""

from __future__ import annotations

import random
import re

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
