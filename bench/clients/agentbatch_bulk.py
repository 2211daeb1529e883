"""agentbatch's REST client alone: `run_bulk` over Arrow batches, no engine and no SQL. The gap to
`agentbatch.run` is what the engine (read, SQL, write) costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.clients.base import ClientConfig, Counts, Job
from bench.data import KEY, read_requests

BATCH_ROWS = 4096


def prepare(config: ClientConfig) -> Job:
    import aiohttp  # noqa: F401  (imports are set-up, untimed, for every client)

    from agentbatch.agent.bulk import run_bulk_sync
    from agentbatch.agent.calls import CallSpec
    from agentbatch.agent.ledger import Ledger

    call = CallSpec(endpoint=config.url, stream=config.stream, max_concurrency=config.concurrency)
    batches = _batches(call, read_requests(config.requests_path, config.rows))
    ledger_path = Path(config.workdir) / "bench.ledger.sqlite"

    def run() -> Counts:
        ledger = Ledger(ledger_path, key=KEY)
        try:
            stats = run_bulk_sync(batches, call=call, key=KEY, ledger=ledger, progress=None)
        finally:
            ledger.close()
        return Counts(rows=stats.done, ok=stats.ok, failed=stats.errors)

    return run


def _batches(call: Any, requests: list[tuple[int, str]]) -> list[Any]:
    """Input batches as the engine hands them over: key, passthrough, request, fingerprint."""
    import pyarrow as pa

    from agentbatch.agent.calls import call_fingerprint, row_fingerprint
    from agentbatch.results import FINGERPRINT_COLUMN, REQUEST_COLUMN

    call_fp = call_fingerprint(call)
    batches = []
    for start in range(0, len(requests), BATCH_ROWS):
        chunk = requests[start : start + BATCH_ROWS]
        texts = [text for _, text in chunk]
        batches.append(
            pa.RecordBatch.from_pydict(
                {
                    KEY: pa.array([key for key, _ in chunk], type=pa.int64()),
                    REQUEST_COLUMN: pa.array(texts),
                    FINGERPRINT_COLUMN: pa.array([row_fingerprint(call_fp, t) for t in texts]),
                }
            )
        )
    return batches
