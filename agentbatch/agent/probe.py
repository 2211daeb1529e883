"""One cheap check that an agent URL is alive, before the REST fallback sends its first row.

Without it, a dead endpoint is found row by row: every row retries its connection errors with
back-off, and a run over 50 rows takes most of a minute to fail. The probe runs once per run:

* what it sends: one `GET` to the URL rows are POSTed to, its query included (no body, no
  credentials beyond what the URL's query carries). An agent server routes only `POST` there,
  so a live server answers `405 Method Not Allowed` (or 200, 400, 401, ...) without running the
  agent: the probe never costs a paid call;
* what stops the run (AgentError, exit 6, before anything is written): connection refused, a host
  name that does not resolve, a TLS failure, a connection that cannot be opened within
  `CONNECT_TIMEOUT_S`, and `404 Not Found` to the GET and to an OPTIONS after it (nothing is
  served at that route: a wrong URL or path; Express-style routers answer 404 to a GET on a
  POST-only route, and name its methods to an OPTIONS);
* what counts as alive: any other status, including 429 and 503 (busy or rate-limiting is the
  limiter's business, not a dead endpoint), and a server that accepts the connection but is slow to
  answer (the probe stops waiting after `READ_TIMEOUT_S` and lets the run go on).

Only plain agent URLs are probed (`--endpoint NAME=URL` overrides and `http(s)://` endpoints).
Databricks Apps and Model Serving endpoints are checked when they are resolved: a missing or
stopped app, missing credentials or a personal access token for an app fail the run before any row.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agentbatch.agent.calls import CallSpec
from agentbatch.agent.endpoints import APPS_DOMAIN_SUFFIX, BUILTIN_INSTANT, resolve_endpoint
from agentbatch.agent.redact import safe_url
from agentbatch.errors import AgentError

if TYPE_CHECKING:
    from databricks.sdk.core import Config

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0

Connector = Callable[[urllib.parse.SplitResult, float], http.client.HTTPConnection]


def probe_call(call: CallSpec, overrides: Mapping[str, str] | None = None) -> None:
    """Probe the endpoint of `call` if it is a plain URL; raise AgentError if it is dead."""
    url = _plain_url_of(call, overrides or {})
    if url is not None:
        probe_url(url, name=call.endpoint)


def probe_url(url: str, *, name: str = "", connect: Connector | None = None) -> None:
    """One GET to `url`. Raises AgentError naming the cause when nothing answers there."""
    parts = urllib.parse.urlsplit(url)
    shown = safe_url(url)
    what = f"agent endpoint {safe_url(name)} ({shown})" if name and name != url else shown
    try:
        conn = (connect or _connect)(parts, CONNECT_TIMEOUT_S)
    except socket.gaierror as err:
        raise AgentError(
            f"{what} is unreachable: host {parts.hostname!r} does not resolve ({err.strerror})"
        ) from None
    except ssl.SSLError as err:
        raise AgentError(f"{what} is unreachable: TLS failed ({err.reason or err})") from None
    except ConnectionRefusedError:
        raise AgentError(
            f"{what} is unreachable: connection refused (is the agent server running on "
            f"port {parts.port or (443 if parts.scheme == 'https' else 80)}?)"
        ) from None
    except TimeoutError:
        raise AgentError(
            f"{what} is unreachable: no connection within {CONNECT_TIMEOUT_S:g} s"
        ) from None
    except OSError as err:
        raise AgentError(f"{what} is unreachable: {err.strerror or err}") from None
    try:
        if conn.sock is not None:
            conn.sock.settimeout(READ_TIMEOUT_S)
        # The query too: the route rows go to may need it (an Azure `api-version`).
        route = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        status = _status(conn, "GET", route)
        if status == 404:
            # Express and routers like it answer a GET on a POST-only route with 404 ("Cannot
            # GET"); an OPTIONS there names the route's methods, and is 404 only where nothing
            # is served.
            status = _status(conn, "OPTIONS", route)
    except TimeoutError:
        log.debug("probe: %s is slow to answer; going on", what)
        return
    except OSError as err:
        # The connection was accepted, then dropped: a server is there, let the run's retries judge.
        log.debug("probe: %s: %s; going on", what, err)
        return
    except http.client.HTTPException as err:
        log.debug("probe: %s: %s; going on", what, err)
        return
    finally:
        conn.close()
    if status == 404:
        raise AgentError(
            f"{what}: 404 Not Found: nothing is served at {parts.path or '/'} "
            "(check the URL and its path)"
        )
    log.debug("probe: %s answered %d: alive", what, status)


def _status(conn: http.client.HTTPConnection, method: str, route: str) -> int:
    conn.request(method, route, headers={"User-Agent": "agentbatch-probe"})
    response = conn.getresponse()
    response.read()  # the connection can then ask again
    return response.status


def _connect(parts: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    conn.connect()  # DNS, TCP and (https) the TLS handshake
    return conn


def _plain_url_of(call: CallSpec, overrides: Mapping[str, str]) -> str | None:
    name = call.endpoint.strip()
    target = overrides.get(name, name).strip()
    if target == BUILTIN_INSTANT or not target.startswith(("http://", "https://")):
        return None
    if (urllib.parse.urlsplit(target).hostname or "").endswith(APPS_DOMAIN_SUFFIX):
        return None  # a Databricks Apps URL: the run checks it with workspace credentials
    endpoint = resolve_endpoint(
        call.endpoint, api=call.api, overrides=overrides, config_factory=_no_config
    )
    return endpoint.url if endpoint.kind == "url" else None


def _no_config() -> Config:
    raise ValueError("a plain URL needs no workspace configuration")
