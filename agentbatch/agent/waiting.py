"""Saying so when a step that retries quietly takes long.

databricks-sdk and databricks-sql-connector retry a host that does not answer, and say nothing
agentbatch's log shows: the SDK's `Config()` probes the host's metadata for up to 300 s
(databricks-sdk `config.py` `_resolve_host_metadata`, `_base_client.py`), the connector retries
opening a session for up to 900 s (`_retry_stop_after_attempts_duration`,
databricks-sql-connector `backend/thrift_backend.py`). A mistyped host or a warehouse that is
still starting was minutes of silence; a watch thread now says what is being waited on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

# The first word after this long, then one a minute.
FIRST_REPORT_S = 10.0
REPORT_EVERY_S = 60.0


@contextlib.contextmanager
def said_if_slow(what: str, hint: str) -> Iterator[None]:
    """Run the block; while it lasts longer than FIRST_REPORT_S, log a warning that names `what`
    and how long it has waited, with `hint` (what to check), then one every REPORT_EVERY_S."""
    began = time.monotonic()
    done = threading.Event()

    def watch() -> None:
        wait = FIRST_REPORT_S
        while not done.wait(wait):
            log.warning("%s: still waiting after %d s; %s", what, time.monotonic() - began, hint)
            wait = REPORT_EVERY_S

    watcher = threading.Thread(target=watch, name="agentbatch-slow-step", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
