"""The fault-injecting demo agent as an aiohttp application (routes, faults, replies).

Routes (all POST unless noted):

| route | speaks |
|---|---|
| `/responses` | Databricks Apps agent (MLflow AgentServer): OpenAI Responses body |
| `/invocations` | `mlflow models serve` / AgentServer: Responses, Chat or pyfunc body |
| `/serving-endpoints/{name}/invocations` | Model Serving: Responses, Chat or pyfunc body |
| `/serving-endpoints/responses` | OpenAI-compatible Responses, endpoint in `model` |
| `/serving-endpoints/chat/completions` | OpenAI-compatible Chat Completions, endpoint in `model` |
| GET `/_stats`, POST `/_reset`, POST `/_config` | counters, zeroing them, changing faults |
| GET `/health`, GET `/agent/info` | liveness, like MLflow's AgentServer |

One request goes: auth -> parse -> capacity -> permanent marker -> drawn fault -> latency ->
reply. Requests are never crashes: a bad body is a 400 with a message.

It refuses what the servers it stands for refuse (recorded from MLflow 3.17 in
tests/conformance/README.md; rules in docs/databricks-behaviour.md):

- `/invocations` and `/serving-endpoints/{name}/invocations` (`mlflow models serve`, Model
  Serving): a body whose Content-Type is not `application/json` -> 415;
- with `minimal` (MLflow's AgentServer, the Apps agent): a string `input` or a Chat `messages`
  body -> 400 `Invalid parameters for ResponsesAgent` (it validates a
  ResponsesAgentRequest). Without `minimal`, `/responses` is an OpenAI-compatible Responses server,
  which takes a string `input` (OpenAI API reference), so the `openai` client can be pointed at it;
- with a token authority: a request without valid credentials -> 401/403 (Apps: OAuth only; an
  unknown or expired token is 401, or with `invalid_token_status=403` Databricks' 403
  "Invalid access token.");
- with `known_endpoints`: an endpoint name that does not exist -> 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
from dataclasses import dataclass, replace
from typing import Any, Literal

from aiohttp import web

from agentbatch.errors import UsageError
from agentbatch.testing import replies, sse, triage
from agentbatch.testing.faults import (
    FaultConfig,
    FaultKind,
    decide_fault,
    latency_s,
    permanent_status,
)
from agentbatch.testing.images import describe_files
from agentbatch.testing.inbound import AgentCall, BadRequest, parse_body
from agentbatch.testing.replies import ChatReply
from agentbatch.testing.stats import ServerStats
from agentbatch.testing.tokens import TokenAuthority, check_message

ResponsesStreamStyle = Literal["openai", "mlflow"]
RETURN_TRACE_HEADER = "x-mlflow-return-trace-id"
_STREAM_FAULTS: frozenset[FaultKind] = frozenset(
    {"truncated_stream", "slow_stream", "stream_error"}
)
_MAX_BODY_BYTES = 16 * 1024 * 1024
# Model Serving's payload limit for foundation-model, external-model and agent endpoints.
SERVING_PAYLOAD_LIMIT = 4_000_000


@dataclass(frozen=True)
class AgentOptions:
    """How the demo agent answers (faults aside)."""

    model: str = "demo-agent"
    # Answer like MLflow's AgentServer: only Responses bodies whose `input` is a list, replies
    # with only `object`, `output` (and `custom_outputs`), errors as FastAPI `{"detail": ...}`,
    # mlflow-style streams.
    minimal: bool = False
    # Stream style of Responses streams; None: `mlflow` when minimal, else `openai`.
    stream_style: ResponsesStreamStyle | None = None
    # What a `messages` body gets back: an OpenAI chat.completion or a legacy ChatAgent reply
    # (which, like on Model Serving, never streams).
    chat_reply: ChatReply = "completion"
    # Serving endpoint names that exist; None: any name exists.
    known_endpoints: frozenset[str] | None = None
    # With an authority: Databricks Apps refuse personal access tokens, Model Serving takes them.
    accept_pat: bool = False
    # What an unknown or expired token gets: 401, or 403 "Invalid access token." as Databricks
    # answers on its REST APIs (whether Model Serving and the Apps proxy do too: not documented).
    invalid_token_status: int = 401

    def __post_init__(self) -> None:
        if self.stream_style not in (None, "openai", "mlflow"):
            raise UsageError(
                f"AgentOptions.stream_style must be 'openai' or 'mlflow', got {self.stream_style!r}"
            )
        if self.chat_reply not in ("completion", "chat_agent"):
            raise UsageError(
                "AgentOptions.chat_reply must be 'completion' or 'chat_agent', "
                f"got {self.chat_reply!r}"
            )

    @property
    def responses_style(self) -> ResponsesStreamStyle:
        if self.stream_style is not None:
            return self.stream_style
        return "mlflow" if self.minimal else "openai"


class AgentHandlers:
    """State and request handlers of one demo agent server."""

    def __init__(
        self,
        faults: FaultConfig | None = None,
        options: AgentOptions | None = None,
        authority: TokenAuthority | None = None,
    ) -> None:
        self.faults = faults or FaultConfig()
        self.options = options or AgentOptions()
        self.authority = authority
        self.stats = ServerStats()

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_post("/responses", self._responses)
        app.router.add_post("/invocations", self._invocations)
        app.router.add_post("/serving-endpoints/responses", self._openai_compatible)
        app.router.add_post("/serving-endpoints/chat/completions", self._openai_compatible)
        app.router.add_post("/serving-endpoints/{name}/invocations", self._serving_invocations)
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/_reset", self._reset)
        app.router.add_post("/_config", self._config)
        app.router.add_get("/health", self._health)
        app.router.add_get("/agent/info", self._info)
        return app

    # -- routes -------------------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, endpoint=None)

    async def _invocations(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, endpoint=None, json_only=True)

    async def _serving_invocations(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, endpoint=request.match_info["name"], json_only=True)

    async def _openai_compatible(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, endpoint="", endpoint_in_model=True)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot().as_json())

    async def _reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response({"reset": True})

    async def _config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise UsageError("the body must be a JSON object of FaultConfig fields")
            unknown = set(changes) - set(FaultConfig.field_names())
            if unknown:
                raise UsageError(f"unknown FaultConfig fields: {', '.join(sorted(unknown))}")
            self.faults = replace(self.faults, **changes)
        except (UsageError, ValueError, TypeError) as error:
            return self._error(400, str(error))
        return web.json_response(dataclasses.asdict(self.faults))

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})

    async def _info(self, request: web.Request) -> web.Response:
        info = {"name": self.options.model, "use_case": "agent", "agent_api": "responses"}
        return web.json_response(info)

    # -- one agent call -----------------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        *,
        endpoint: str | None,
        endpoint_in_model: bool = False,
        json_only: bool = False,
    ) -> web.StreamResponse:
        self.stats.arrived()
        try:
            return await self._serve_counted(request, endpoint, endpoint_in_model, json_only)
        finally:
            self.stats.left()

    async def _serve_counted(
        self,
        request: web.Request,
        endpoint: str | None,
        endpoint_in_model: bool,
        json_only: bool,
    ) -> web.StreamResponse:
        if self.authority is not None:
            check = self.authority.check_header(
                request.headers.get("Authorization"), accept_pat=self.options.accept_pat
            )
            if not check.ok:
                self.stats.fault("auth")
                invalid = self.options.invalid_token_status
                return self._error(*check_message(check, invalid_token_status=invalid))
        serving = endpoint is not None or endpoint_in_model
        if serving and (request.content_length or 0) > SERVING_PAYLOAD_LIMIT:
            # Model Serving: 4 MB per request for foundation-model, external-model and agent
            # endpoints (docs/databricks-behaviour.md); the status is an assumption.
            return self._error(
                413,
                f"request payload of {request.content_length:,} bytes is over the "
                f"{SERVING_PAYLOAD_LIMIT:,}-byte limit of this endpoint",
            )
        if json_only and request.content_type != "application/json":
            # mlflow models serve (the scoring server behind Model Serving): 415, text/plain.
            self.stats.status(415)
            return web.Response(
                status=415,
                text="Unsupported content type; this server accepts application/json",
                content_type="text/plain",
            )
        try:
            call = parse_body(await request.read(), default_model=endpoint or None)
        except BadRequest as error:
            return self._error(400, str(error))
        if self.options.minimal and (call.api != "responses" or call.string_input):
            # What MLflow's AgentServer says when ResponsesAgentRequest validation fails.
            return self._error(
                400, "Invalid parameters for ResponsesAgent: 'input' must be a list of messages"
            )
        if endpoint_in_model:
            if not call.model:
                return self._error(400, "'model' (the serving endpoint name) is required")
            endpoint = call.model
        known = self.options.known_endpoints
        if endpoint is not None and known is not None and endpoint not in known:
            return self._error(404, f"Endpoint '{endpoint}' does not exist.")
        self.stats.keyed(call.key)
        faults = self.faults  # one consistent config for the whole request
        if not self.stats.try_admit(faults.capacity):
            self.stats.fault("capacity")
            message = f"the agent is at capacity ({faults.capacity} requests in flight)"
            return self._error(429, message, retry_after=faults.capacity_retry_after_s)
        try:
            return await self._answer(request, call, faults)
        finally:
            self.stats.release()

    async def _answer(
        self, request: web.Request, call: AgentCall, faults: FaultConfig
    ) -> web.StreamResponse:
        attempt, faults_so_far = self.stats.next_attempt(call.key)
        permanent = permanent_status(faults, call.context)
        if permanent is not None:
            marker, status = permanent
            self.stats.fault("permanent")
            return self._error(status, f"the request contains {marker}; it can never succeed")
        kind = decide_fault(faults, call.key, attempt, faults_so_far)
        if kind is not None:
            self.stats.fault(kind, call.key)
        if kind == "rate_limit":
            return self._error(429, "rate limit exceeded", retry_after=faults.retry_after_s)
        if kind == "rate_limit_no_retry_after":
            return self._error(429, "rate limit exceeded")
        delay = latency_s(faults, call.key, attempt)
        if delay > 0:
            await asyncio.sleep(delay)
        if kind == "server_error":
            return self._error(500, "injected fault: internal error")
        if kind == "unavailable":
            return self._error(503, "injected fault: temporarily unavailable")
        if kind == "connection_reset":
            return await _drop_connection(request)
        if kind == "hang":
            await asyncio.sleep(faults.hang_s)
            return await _drop_connection(request)
        if kind == "malformed_json":
            self.stats.status(200)
            return web.Response(body=b'{"id": "resp_broken", "output": [', content_type=_JSON)
        reply = replies.make_reply(
            call,
            describe_files(call.files)
            if call.files
            else triage.answer(call.text, call.context, structured=call.structured),
            attempt,
            metadata_trace=request.headers.get(RETURN_TRACE_HEADER, "").lower() == "true",
        )
        stream_kind = kind if kind in _STREAM_FAULTS else None
        if call.stream and call.api != "predictions" and not self._is_chat_agent(call):
            return await self._stream(request, call, reply, faults, stream_kind)
        return await self._json(request, call, reply, faults, stream_kind)

    def _is_chat_agent(self, call: AgentCall) -> bool:
        return call.api == "chat" and self.options.chat_reply == "chat_agent"

    def _body(self, call: AgentCall, reply: replies.Reply) -> dict[str, Any]:
        model = self.options.model
        if call.api == "predictions":
            answers = [triage.answer(row, row, structured=False) for row in call.rows]
            return replies.predictions_body(answers)
        if call.api == "chat":
            if self.options.chat_reply == "chat_agent":
                return replies.chat_agent_body(call, reply)
            return replies.chat_completion_body(call, reply, model=model)
        return replies.responses_body(call, reply, model=model, minimal=self.options.minimal)

    async def _json(
        self,
        request: web.Request,
        call: AgentCall,
        reply: replies.Reply,
        faults: FaultConfig,
        fault: FaultKind | None,
    ) -> web.StreamResponse:
        if fault == "stream_error" and call.api == "responses":
            body = replies.failed_responses_body(call, reply, model=self.options.model)
        else:
            body = self._body(call, reply)
        data = json.dumps(body).encode()
        if fault == "slow_stream":
            await asyncio.sleep(faults.slow_chunk_ms / 1000.0)
        self.stats.status(200)
        if fault != "truncated_stream":
            return web.Response(body=data, content_type=_JSON)
        response = web.StreamResponse(headers={"Content-Type": _JSON})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        return await _drop_connection(request)

    async def _stream(
        self,
        request: web.Request,
        call: AgentCall,
        reply: replies.Reply,
        faults: FaultConfig,
        fault: FaultKind | None,
    ) -> web.StreamResponse:
        style: sse.StreamStyle = "chat" if call.api == "chat" else self.options.responses_style
        frames = sse.stream_frames(
            style,
            call,
            reply,
            model=self.options.model,
            error_after=1 if fault == "stream_error" else None,
        )
        pause_ms = faults.slow_chunk_ms if fault == "slow_stream" else faults.chunk_delay_ms
        cut = max(1, len(frames) // 2) if fault == "truncated_stream" else None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        self.stats.status(200)
        self.stats.stream_started()
        for index, frame in enumerate(frames):
            if index == cut:
                return await _drop_connection(request)
            if pause_ms > 0 and index > 0:
                await asyncio.sleep(pause_ms / 1000.0)
            await response.write(frame)
        await response.write_eof()
        self.stats.stream_completed()
        return response

    def _error(
        self, status: int, message: str, *, retry_after: float | None = None
    ) -> web.Response:
        self.stats.status(status)
        body = {"detail": message} if self.options.minimal else replies.error_body(status, message)
        headers = {"Retry-After": _format_seconds(retry_after)} if retry_after is not None else None
        return web.Response(
            status=status, body=json.dumps(body).encode(), content_type=_JSON, headers=headers
        )


_JSON = "application/json"


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


async def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Reset the TCP connection (RST, not FIN) and wait to be cancelled by the lost connection."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp cancels a handler whose connection is gone; this sleep is where that lands.
    await asyncio.sleep(3600)
    raise ConnectionResetError("connection dropped on purpose")
