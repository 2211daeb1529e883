"""REST fallback: call an agent over HTTP for every row, with retries, adaptive concurrency and a
durable ledger.

    calls.py            CallSpec (what determines the calls) and the fingerprints
    endpoints.py        endpoint name -> URL, kind and auth (apps, serving endpoints, URLs, builtin)
    auth.py             auth headers from databricks-sdk's Config, refreshed on 401
    bodies.py           the request body of one row
    response_format.py  STRUCT / JSON schema -> Arrow type, request schema, answer parser
    replies.py          AgentReply / RowFailure, the one per-row outcome shape
    responses.py        JSON replies -> AgentReply or RowFailure
    sse.py              streamed (SSE) replies -> AgentReply or RowFailure
    retry.py            the retry policy (pure)
    limiter.py          adaptive concurrency and an optional requests/s bucket
    transport.py        the HTTP seam and its aiohttp implementation
    worker.py           one row: attempts, retries, classification
    rows.py             output rows: passthrough + result columns
    ledger.py           the SQLite checkpoint of answered rows
    bulk.py             the bulk runner (producer, workers, one writer)
    builtin.py          `builtin:instant`, the vectorised in-process agent
    stats.py, progress.py  BulkStats and progress reporting
    redact.py           keeps credentials out of messages

Import the submodules directly; this package imports nothing heavy.
"""
