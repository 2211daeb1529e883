"""Auth headers for agent calls, from databricks-sdk's unified config.

The SDK resolves credentials (env vars, profiles, OAuth M2M, ...) and refreshes OAuth tokens itself;
this module only caches the headers briefly, fetches them off the event loop, and forces a new
token (by re-initialising the SDK's credentials provider) when a call gets a 401, or the 403
"Invalid access token." Databricks answers a revoked or expired token with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agentbatch.agent.redact import register_auth_headers

if TYPE_CHECKING:
    from databricks.sdk.core import Config

# Headers are re-read from the SDK this often. Databricks refuses a token with 30 s or less
# left, and the SDK hands out a token until 40 s before its expiry (databricks-sdk `oauth.py`
# `Token.expired`), so a header may be reused for under 10 s; 5 s leaves room for latency.
HEADER_MAX_AGE_S = 5.0


class AuthHeaders:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._headers: dict[str, str] = {}
        self._fetched_at = -HEADER_MAX_AGE_S
        self._lock = asyncio.Lock()
        # Cleared while a forced refresh runs: new calls wait instead of spending stale tokens.
        self._ready = asyncio.Event()
        self._ready.set()
        # Bumped on every forced refresh; a caller that saw a 401 passes the generation it used.
        self.generation = 0
        self._last_success_generation = -1

    @property
    def config(self) -> Config:
        return self._config

    @property
    def auth_type(self) -> str | None:
        return self._config.auth_type

    async def get(self) -> tuple[Mapping[str, str], int]:
        """Current headers and their generation."""
        await self._ready.wait()
        if self._clock() - self._fetched_at >= HEADER_MAX_AGE_S:
            async with self._lock:
                if self._clock() - self._fetched_at >= HEADER_MAX_AGE_S:
                    self._store(await asyncio.to_thread(self._config.authenticate))
        return self._headers, self.generation

    async def refresh(self, used_generation: int) -> None:
        """Force new credentials after a 401, once per generation however many calls saw it."""
        async with self._lock:
            if used_generation != self.generation:
                return
            self._ready.clear()
            try:
                self._store(await asyncio.to_thread(self._reinitialise))
                self.generation += 1
            finally:
                self._ready.set()

    def note_success(self, generation: int) -> None:
        self._last_success_generation = max(self._last_success_generation, generation)

    def refused_after_refresh(self, generation: int) -> bool:
        """A 401 for credentials a forced refresh produced, before they ever worked: refreshing
        again will not help (wrong principal, revoked client, no access)."""
        return generation > 0 and self._last_success_generation < generation

    def _reinitialise(self) -> dict[str, str]:
        self._config.init_auth()  # type: ignore[no-untyped-call]
        return self._config.authenticate()

    def _store(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)
        register_auth_headers(self._headers)
        self._fetched_at = self._clock()
