"""Agent calls from Spark executors: the REST bulk runner, without its SQLite ledger.

Executors cannot see the driver's credentials or its state folder, so the driver resolves each
endpoint once (`remote_call`) into a URL and the auth headers to send, and every executor task runs
`agentbatch.agent.bulk.run_bulk` over its rows with a sink that plays the ledger's part: completed
rows go wherever the task wants them (a checkpoint file, the task's output).

Credentials on the executors: with OAuth M2M credentials (a service principal, e.g. the one read
from the `apps_secret_scope`) every task signs in itself through databricks-sdk (`OAuthClient`), so
tokens are refreshed on every executor however long the run; a 401 forces one new token and one
resend. Other credentials (a PAT, the runtime's token) cannot be re-created on an executor: their
headers are minted once on the driver, and a run that outlives them stops with the endpoint's 401
as an AgentError, keeps every answer, and resumes on re-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from agentbatch.agent.calls import CallSpec
from agentbatch.agent.redact import Registered, registered, safe_url
from agentbatch.agent.tasks import run_sync

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.agent.auth import AuthHeaders
    from agentbatch.agent.shared_limits import BudgetAddress
    from agentbatch.agent.stats import BulkStats
    from agentbatch.agent.transport import RawReply, Transport

# Connections beyond the concurrency cap, for calls being torn down while new ones start.
_SPARE_CONNECTIONS = 16


@dataclass(frozen=True)
class OAuthClient:
    """OAuth M2M credentials an executor signs in with (picklable; never printed)."""

    host: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"OAuthClient(host={self.host!r}, client_id={self.client_id!r})"

    def config(self) -> Any:
        from databricks.sdk.core import Config

        return Config(
            host=self.host,
            client_id=self.client_id,
            client_secret=self.client_secret,
            auth_type="oauth-m2m",
        )


@dataclass(frozen=True)
class RemoteCall:
    """Everything an executor needs to call the agent; picklable, resolved on the driver."""

    call: CallSpec
    # endpoint name -> URL (or builtin:instant), as run_bulk's endpoint overrides.
    overrides: Mapping[str, str]
    # Sent with every request (auth minted on the driver); never logged.
    headers: Mapping[str, str]

    # A service principal each task signs in as (refreshing its tokens); None: `headers` only.
    oauth: OAuthClient | None = None
    # The driver's shared agent budget (shared_limits.py); None: each task adapts alone.
    budget: BudgetAddress | None = None
    # The user's max_concurrency, before it was split across tasks (None: adaptive).
    asked_concurrency: int | None = None
    # The driver's registered secrets (a job's env() values, URL credentials, secret-scope values),
    # masked on the executor as on the driver; never logged.
    secrets: Registered = field(default_factory=Registered)

    def __repr__(self) -> str:  # keep credentials out of reprs and tracebacks
        overrides = {name: safe_url(url) for name, url in self.overrides.items()}
        return f"RemoteCall(endpoint={safe_url(self.call.endpoint)!r}, overrides={overrides!r})"

    def per_task(self, tasks: int) -> RemoteCall:
        """The same call with the run's concurrency and request-rate caps split across `tasks`."""
        from agentbatch.agent.content import concurrency_ceiling
        from agentbatch.agent.limiter import DEFAULT_CEILING

        tasks = max(1, tasks)
        cap = self.call.max_concurrency or concurrency_ceiling(self.call.files, DEFAULT_CEILING)
        rate = self.call.requests_per_second
        call = dataclasses.replace(
            self.call,
            max_concurrency=max(1, cap // tasks),
            requests_per_second=rate / tasks if rate else None,
        )
        return dataclasses.replace(self, call=call, asked_concurrency=self.call.max_concurrency)

    def with_budget(self, budget: BudgetAddress | None) -> RemoteCall:
        return dataclasses.replace(self, budget=budget)


def plain_call(call: CallSpec) -> CallSpec:
    """`call` with plain dicts (mapping proxies do not pickle)."""
    return dataclasses.replace(
        call,
        custom_inputs=_plain(call.custom_inputs),
        databricks_options=_plain(call.databricks_options),
        model_parameters=_plain(call.model_parameters),
        response_format=_plain(call.response_format)
        if isinstance(call.response_format, Mapping)
        else call.response_format,
    )


def remote_call(call: CallSpec, endpoint_overrides: Mapping[str, str] | None = None) -> RemoteCall:
    """Resolve `call.endpoint` on the driver (may ask the workspace; raises AgentError/ConfigError)."""
    from agentbatch.agent.endpoints import BUILTIN_INSTANT, resolve_endpoint

    overrides = dict(endpoint_overrides or {})
    call = plain_call(call)
    name = call.endpoint.strip()
    if name in overrides:
        return RemoteCall(call, {name: overrides[name]}, {}, secrets=registered())
    if name == BUILTIN_INSTANT or _plain_url(name):
        # No credentials: executors resolve it themselves.
        return RemoteCall(call, {}, {}, secrets=registered())
    endpoint = resolve_endpoint(
        name, api=call.api, overrides=overrides, databricks_options=call.databricks_options
    )
    if endpoint.kind == "builtin":
        return RemoteCall(call, {name: "builtin:instant"}, {}, secrets=registered())
    headers: dict[str, str] = dict(endpoint.headers)
    oauth = _oauth_client(endpoint.auth.config) if endpoint.auth is not None else None
    if endpoint.auth is not None and oauth is None:
        minted, _ = run_sync(endpoint.auth.get())
        headers.update(minted)
    # The resolved URL ends in its route, so the executor's run_bulk uses it as is.
    return RemoteCall(call, {name: endpoint.url}, headers, oauth, secrets=registered())


def _oauth_client(config: Any) -> OAuthClient | None:
    if config.auth_type != "oauth-m2m" or not (config.client_id and config.client_secret):
        return None
    return OAuthClient(str(config.host), str(config.client_id), str(config.client_secret))


class _Sink:
    """Stands in for the ledger: every row is new, completed rows go to `on_rows`."""

    def __init__(
        self, on_rows: Callable[[pa.Table], None], skip: Callable[[pa.RecordBatch], pa.RecordBatch]
    ) -> None:
        self._on_rows = on_rows
        self._skip = skip

    def reuse(
        self, batch: pa.RecordBatch, response_type: Any, *, retry_errors: bool
    ) -> tuple[None, pa.RecordBatch]:
        return None, self._skip(batch)

    def append(self, rows: pa.RecordBatch | pa.Table) -> None:
        import pyarrow as pa

        self._on_rows(rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows]))


class _HeaderTransport:
    """Adds the driver's auth headers to every request."""

    def __init__(self, inner: Transport, headers: Mapping[str, str]) -> None:
        self._inner = inner
        self._headers = dict(headers)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, stream: bool, timeout_s: float
    ) -> RawReply:
        return await self._inner.post(
            url, body, {**self._headers, **headers}, stream=stream, timeout_s=timeout_s
        )

    async def close(self) -> None:
        await self._inner.close()


class _AuthTransport:
    """Adds fresh auth headers to every request; a 401 forces one new token and one resend."""

    def __init__(self, inner: Transport, headers: Mapping[str, str], auth: AuthHeaders) -> None:
        self._inner = inner
        self._headers = dict(headers)
        self._auth = auth

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, stream: bool, timeout_s: float
    ) -> RawReply:
        auth, generation = await self._auth.get()
        reply = await self._inner.post(
            url, body, {**self._headers, **auth, **headers}, stream=stream, timeout_s=timeout_s
        )
        if reply.status != 401:
            return reply
        await self._auth.refresh(generation)
        auth, _ = await self._auth.get()
        return await self._inner.post(
            url, body, {**self._headers, **auth, **headers}, stream=stream, timeout_s=timeout_s
        )

    async def close(self) -> None:
        await self._inner.close()


def answer_batches(
    batches: Iterable[pa.RecordBatch],
    remote: RemoteCall,
    key: str,
    on_rows: Callable[[pa.Table], None],
    *,
    skip: Callable[[pa.RecordBatch], pa.RecordBatch] = lambda batch: batch,
) -> BulkStats:
    """Answer every row of `batches` (key, passthrough, `_request`, `request_fingerprint`).

    Completed rows (standard result columns) are handed to `on_rows` from a worker thread, in
    groups, as they complete. Raises AgentError when the endpoint is unusable for the whole run.
    """
    return run_sync(_answer(batches, remote, key, on_rows, skip))


async def _answer(
    batches: Iterable[pa.RecordBatch],
    remote: RemoteCall,
    key: str,
    on_rows: Callable[[pa.Table], None],
    skip: Callable[[pa.RecordBatch], pa.RecordBatch],
) -> BulkStats:
    from agentbatch.agent.bulk import run_bulk
    from agentbatch.agent.ledger import Ledger
    from agentbatch.agent.limiter import DEFAULT_CEILING, INITIAL_LIMIT, Limiter
    from agentbatch.agent.redact import register_all, register_auth_headers
    from agentbatch.agent.shared_limits import SharedBudget
    from agentbatch.agent.transport import AiohttpTransport

    # An executor's Python worker is a process of its own: the driver's registration of these
    # headers and of its other secrets (the job's env() values among them) is not known here, and
    # answers and messages must be scrubbed of them all the same.
    register_auth_headers(remote.headers)
    register_all(remote.secrets)
    transport: Transport | None = None
    cap = remote.call.max_concurrency or DEFAULT_CEILING
    if remote.oauth is not None:
        from agentbatch.agent.auth import AuthHeaders

        config = await asyncio.to_thread(remote.oauth.config)
        transport = _AuthTransport(
            AiohttpTransport(max_connections=cap + _SPARE_CONNECTIONS),
            remote.headers,
            AuthHeaders(config),
        )
    elif remote.headers:
        transport = _HeaderTransport(
            AiohttpTransport(max_connections=cap + _SPARE_CONNECTIONS), remote.headers
        )
    # Without max_concurrency a task starts slow (not at its split of the ceiling); with a shared
    # budget it starts at its share and the driver's controller grows the total.
    limiter = Limiter(
        max_concurrency=remote.call.max_concurrency,
        requests_per_second=remote.call.requests_per_second,
        initial=(remote.asked_concurrency and remote.call.max_concurrency) or INITIAL_LIMIT,
        ceiling=DEFAULT_CEILING,
    )
    budget = (
        SharedBudget(remote.budget, limiter, uuid.uuid4().hex[:12])
        if remote.budget is not None
        else contextlib.nullcontext()
    )
    try:
        async with budget:
            return await run_bulk(
                batches,
                call=remote.call,
                key=key,
                ledger=cast(Ledger, _Sink(on_rows, skip)),
                endpoint_overrides=remote.overrides,
                transport=transport,
                limiter=limiter,
            )
    finally:
        if transport is not None:
            await transport.close()


def _plain_url(name: str) -> bool:
    """An http(s) URL that gets no workspace credentials (not a Databricks Apps URL)."""
    import urllib.parse

    from agentbatch.agent.endpoints import APPS_DOMAIN_SUFFIX

    if not name.startswith(("http://", "https://")):
        return False
    return not (urllib.parse.urlsplit(name).hostname or "").endswith(APPS_DOMAIN_SUFFIX)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
