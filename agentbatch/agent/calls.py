"""What determines the calls of a REST-fallback run, and the fingerprints that make resume safe.

The call fingerprint covers everything that changes an answer (endpoint, and the URL a run maps it
to; api, parameters, custom inputs, Databricks options, response format, request kind) and nothing
that does not (job name, timeouts, concurrency), so editing a prompt or a parameter re-sends a row
and renaming a job does not.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from agentbatch.agent.content import FileInput

Api = Literal["responses", "chat"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class CallSpec:
    """One job's agent calls. Built by the planner from the job spec.

    `endpoint` is one of: `apps/<name>` (a Databricks App), `<name>` (a Model Serving endpoint,
    `/invocations`), `openai/<name>` (the OpenAI-compatible serving routes), a plain `http(s)://`
    URL (an agent server speaking the Apps protocol), or `builtin:instant`.
    """

    endpoint: str
    api: Api = "responses"
    stream: bool = False
    custom_inputs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    databricks_options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    model_parameters: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    # A Databricks type string (`STRUCT<label: STRING>`) or a JSON schema.
    response_format: str | Mapping[str, Any] | None = None
    # True: the row's `_request` is a JSON object used as the body's base. False: a text prompt.
    request_is_json: bool = False
    timeout_s: float = 300.0
    max_retries: int = 8
    # None: adaptive concurrency up to a generous ceiling; an int caps it.
    max_concurrency: int | None = None
    requests_per_second: float | None = None
    # Per-row files (images, documents) sent beside the request; None: text requests only.
    files: FileInput | None = None

    def __post_init__(self) -> None:
        if not self.endpoint or not self.endpoint.strip():
            raise ValueError("CallSpec.endpoint must not be empty")
        if self.api not in ("responses", "chat"):
            raise ValueError(f"CallSpec.api must be 'responses' or 'chat', not {self.api!r}")
        if self.timeout_s <= 0:
            raise ValueError("CallSpec.timeout_s must be > 0")
        if self.max_retries < 0:
            raise ValueError("CallSpec.max_retries must be >= 0")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("CallSpec.max_concurrency must be >= 1")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError("CallSpec.requests_per_second must be > 0")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, non-ASCII kept, non-JSON values as strings."""
    return json.dumps(
        _plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def _plain(value: Any) -> Any:
    # Mappings such as MappingProxyType are not JSON-serialisable as such.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def call_fingerprint(spec: CallSpec, route: str | None = None) -> str:
    """sha256 hex over what determines the answers of `spec` (see the module docstring), and
    `route`, the URL (or built-in agent) a run's `--endpoint` sends the endpoint's rows to."""
    payload = {
        "endpoint": spec.endpoint,
        "api": spec.api,
        "model_parameters": spec.model_parameters,
        "custom_inputs": spec.custom_inputs,
        "databricks_options": spec.databricks_options,
        "response_format": spec.response_format,
        "request_is_json": spec.request_is_json,
    }
    if spec.files is not None:  # absent otherwise: the fingerprints of text jobs stay as they were
        payload["files"] = spec.files.fingerprint_fields()
    identity = route_identity(spec.endpoint, route) if route is not None else None
    if identity is not None:
        # Another agent's answers are not this one's (a trial against builtin:instant or a
        # staging URL).
        payload["route"] = identity
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def route_identity(endpoint: str, route: str) -> str | None:
    """Which agent `route` (the URL a run maps `endpoint` to) reaches, as far as its answers go:
    None when it is the endpoint's own Databricks route (its `/serving-endpoints/<name>/` path,
    or for `apps/<name>` an app URL of that name), the same agent; else the URL without
    credentials or query values (a rotated key changes no answer), and without the port on this
    machine (a local agent server started again on another port is the same agent), whichever
    name of this machine the URL gives (`localhost`, `127.0.0.1`, `[::1]`)."""
    parts = urllib.parse.urlsplit(route)
    if not parts.netloc:
        return route  # builtin:instant
    host = parts.hostname or ""
    app = endpoint.removeprefix("apps/") if endpoint.startswith("apps/") else None
    if f"/serving-endpoints/{endpoint}/" in parts.path or (
        app is not None and host.startswith(f"{app}-") and host.endswith(".databricksapps.com")
    ):
        return None
    # This machine by any of its names (`localhost`, `127.0.0.1`, `[::1]`) is one agent, as is
    # any port of it: spelt as the agent server prints its URL.
    loopback = host in _LOOPBACK_HOSTS
    netloc = "127.0.0.1" if loopback else f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:  # not a port: refused where the URL is called
        port = None
    if port is not None and not loopback:
        netloc += f":{port}"
    # `.../agent/` and `.../agent` reach the same route (`.../agent/responses`).
    path = parts.path.rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, path, "", ""))


_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


# A NULL request's fingerprint: the call's behind a prefix no sha256 hex digest has.
NULL_REQUEST_PREFIX = "null-request:"


def row_fingerprint(call_fp: str, request_text: str | None) -> str:
    """`sha2(concat(call_fp, request_text), 256)` as the inputs SQL computes it (a NULL request:
    `null_request_fingerprint`)."""
    if request_text is None:
        return null_request_fingerprint(call_fp)
    return hashlib.sha256((call_fp + request_text).encode("utf-8")).hexdigest()


def null_request_fingerprint(call_fp: str) -> str:
    """A row without a request is a row error, never sent; a fingerprint of its own lets the
    target hold it as done, like any other row."""
    return NULL_REQUEST_PREFIX + call_fp
