"""The selection, checked before any call (and by a dry run, which refuses what a run would):
its size, what the target already holds, keys that repeat, keys that are missing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentbatch.errors import UsageError

if TYPE_CHECKING:
    from agentbatch.engines.base import Engine
    from agentbatch.planning.definition import Plan

log = logging.getLogger(__name__)


def check_selection(plan: Plan, engine: Engine) -> dict[str, int]:
    """Count the selection and what the target already holds; refuse a source whose keys repeat
    and a merge over a target holding a key in several rows; warn of rows without a key."""
    counts = engine.fetch_one(plan.preflight.counts.sql)
    repeated = int(counts.get("repeated_keys") or 0)
    if repeated:
        raise UsageError(_repeated_keys_message(plan, engine, repeated))
    several = int(counts.get("target_repeated_keys") or 0)
    if several:
        raise UsageError(
            f"{plan.job.output.table} holds {several} key(s) in more than one row (written "
            "by mode append); mode merge keeps one row per key, so nothing was sent: run once "
            "with mode overwrite (it reuses every answer the table holds) or keep mode append"
        )
    selection = {
        "selected": int(counts.get("selected") or 0),
        "skipped": int(counts.get("done") or 0),
    }
    null_keys = int(counts.get("null_keys") or 0)
    if null_keys:
        log.warning(
            "%d source row(s)%s have no %r (NULL): a row without a key can be neither written by "
            "key nor resumed, so they are not sent; give them a key or filter them out in "
            "`source.where`",
            null_keys,
            " matching `source.where`" if plan.job.source.where else "",
            plan.job.source.key,
        )
        selection["null_keys"] = null_keys
    return selection


def _repeated_keys_message(plan: Plan, engine: Engine, repeated: int) -> str:
    sample = engine.fetch_batches(plan.preflight.repeated_keys.sql)
    shown = [f"{row['key']!r} x{row['copies']}" for batch in sample for row in batch.to_pylist()]
    key = plan.job.source.key
    return (
        f"source key {key!r} is not unique: {repeated} value(s) occur more than once "
        f"({', '.join(shown[:5])}{', ...' if repeated > 5 else ''}); one key gets one answer, "
        "so nothing was sent: remove the duplicates, narrow `source.where`, or choose a key "
        "that is unique"
    )
