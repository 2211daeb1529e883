# mypy: disable-error-code="no-untyped-call"
# (the Thrift classes generated into the connector carry no type hints)
"""A loopback Databricks SQL warehouse that the unmodified databricks-sql-connector talks to.

It speaks the warehouse wire protocol — Thrift TCLIService (binary protocol) over HTTP, results
as Arrow IPC batches — on 127.0.0.1 and runs the statements with a pluggable executor::

    with serve_warehouse(DuckDBExecutor()) as wh:
        with databricks.sql.connect(**wh.connect_kwargs()) as conn:
            ...
        wh.statements, wh.cancelled, wh.executions, wh.sessions

The connector is pointed at it only through its connection options (`_connection_uri` for the
plain-HTTP URL, `enable_telemetry=False` so it calls nothing else).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from databricks.sql.thrift_api.TCLIService import TCLIService
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from .context import Executor
from .operations import States
from .records import Records, SessionRecord, StatementRecord
from .service import WarehouseService, WarehouseSettings
from .staging import StagingArea

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "dapi-loopback-test-token"
_WAREHOUSES_API = "/api/2.0/sql/warehouses/"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        # Set by serve_warehouse once the port is known.
        self.processor: Any = None
        self.http_path = ""
        self.authorize: Callable[[str | None], bool] = lambda _header: True
        self.upstream: str | None = None
        self.warehouse_id = ""
        self.processor_settings: WarehouseSettings | None = None
        self.records: Records | None = None
        self.staging: StagingArea | None = None

    def close_connections(self) -> None:
        """Drop keep-alive connections so their handler threads end with the server."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the connector keeps its connection alive
    server: _HTTPServer
    timeout = 30

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only; headers (which carry the bearer token) are never logged.
        logger.debug("%s %s", self.address_string(), format % args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(
        self, status: int, body: bytes, content_type: str = "text/plain", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self._body()
        path = self.path.split("?", 1)[0]
        if path != self.server.http_path:
            self._elsewhere("POST", body)
            return
        authorization = self.headers.get("Authorization")
        records = self.server.records
        if records is not None and authorization is not None:
            records.add(records.authorizations, authorization)
        if not self.server.authorize(authorization):
            self._reply(
                401,
                b"invalid access token",
                x_databricks_reason_phrase="Invalid access token.",
            )
            return
        iprot = TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(body))
        out = TTransport.TMemoryBuffer()
        self.server.processor.process(iprot, TBinaryProtocol.TBinaryProtocol(out))
        self._reply(200, out.getvalue(), "application/x-thrift")

    def _elsewhere(self, method: str, body: bytes) -> None:
        """Not the warehouse: relay to the upstream workspace API when there is one."""
        upstream = self.server.upstream
        if upstream is None and method == "GET" and self.path == "/.well-known/databricks-config":
            # databricks-sdk reads the host's metadata while resolving its config.
            self._reply(200, b'{"workspace_id": "1234567890123456"}', "application/json")
            return
        if upstream is None:
            self._reply(404, f"nothing at {self.path}".encode())
            return
        target = urlsplit(upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection = http.client.HTTPConnection(
            target.hostname or "127.0.0.1", target.port, timeout=30
        )
        try:
            connection.request(method, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            content_type = response.getheader("Content-Type") or "application/octet-stream"
        finally:
            connection.close()
        self._reply(response.status, payload, content_type)

    def _staging(self, method: str) -> None:
        body = self._body() if method in ("PUT", "POST") else b""
        prefix = "/staging/"
        if self.server.staging is None or not self.path.startswith(prefix):
            self._elsewhere(method, body)
            return
        status, payload = self.server.staging.serve(method, self.path[len(prefix) :], body)
        self._reply(status, payload, "application/octet-stream")

    def do_PUT(self) -> None:
        self._staging("PUT")

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0].startswith(_WAREHOUSES_API):
            self._warehouse_info()
            return
        self._staging("GET")

    def _warehouse_info(self) -> None:
        """`GET /api/2.0/sql/warehouses/{id}` as the workspace answers it (databricks-sdk's
        `warehouses.get`): this warehouse's type, or RESOURCE_DOES_NOT_EXIST for another id."""
        authorization = self.headers.get("Authorization")
        if not self.server.authorize(authorization):
            # As the workspace REST APIs answer (agentbatch.testing.tokens.INVALID_TOKEN_MESSAGE):
            # a token it does not accept is 403, no credentials at all 401.
            if authorization is None:
                self._json(401, {"error_code": "UNAUTHENTICATED", "message": "No credentials."})
            else:
                self._json(403, {"error_code": 403, "message": "Invalid access token."})
            return
        asked = self.path.split("?", 1)[0][len(_WAREHOUSES_API) :]
        settings = self.server.processor_settings
        if asked != self.server.warehouse_id or settings is None:
            message = f"Warehouse {asked} does not exist."
            self._json(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": message})
            return
        info = {
            "id": asked,
            "name": "loopback",
            "state": "RUNNING",
            "warehouse_type": settings.warehouse_type,
            "enable_serverless_compute": settings.serverless,
        }
        self._json(200, info)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._reply(status, json.dumps(payload).encode(), "application/json")

    def do_DELETE(self) -> None:
        self._staging("DELETE")


@dataclass
class Warehouse:
    """A running loopback warehouse and everything it received."""

    host: str
    port: int
    http_path: str
    warehouse_id: str
    token: str | None
    volumes_dir: Path
    records: Records
    service: WarehouseService = field(repr=False)
    # With TLS: the CA file that signed the server's certificate (made by the tests).
    ca_file: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ca_file is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.http_path}"

    @property
    def statements(self) -> list[str]:
        """SQL text of every statement received, in order."""
        return [r.sql for r in list(self.records.executions)]

    @property
    def cancelled(self) -> list[str]:
        """SQL text of every statement cancelled while it ran (CancelOperation)."""
        return [r.sql for r in list(self.records.cancelled)]

    @property
    def executions(self) -> list[StatementRecord]:
        return list(self.records.executions)

    def fetches_of(self, sql: str) -> list[int]:
        """Rows sent in each result round-trip of the (last) statement with this exact SQL."""
        ids = [r.statement_id for r in self.records.executions if r.sql == sql]
        if not ids:
            raise KeyError(f"no statement {sql!r}")
        return [rows for sid, rows in list(self.records.fetches) if sid == ids[-1]]

    @property
    def sessions(self) -> list[SessionRecord]:
        return list(self.records.sessions)

    @property
    def authorizations(self) -> list[str]:
        return list(self.records.authorizations)

    def create_volume(self, name: str) -> None:
        """The volume `catalog.schema.volume` exists, as if made by CREATE VOLUME beforehand."""
        (self.volumes_dir / name.replace(".", "/")).mkdir(parents=True, exist_ok=True)

    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Options for `databricks.sql.connect(...)` that reach this warehouse."""
        kwargs: dict[str, Any] = {
            "server_hostname": self.host,
            "http_path": self.http_path,
            "_connection_uri": self.url,
            "access_token": self.token or DEFAULT_TOKEN,
            "enable_telemetry": False,
        }
        if self.ca_file is not None:
            # The connector's own TLS option: verify the server against this CA only.
            kwargs["_tls_trusted_ca_file"] = str(self.ca_file)
        kwargs.update(overrides)
        return kwargs

    def statement_id(self, contains: str) -> str:
        """Id of the last statement whose SQL contains `contains`."""
        for record in reversed(self.executions):
            if contains in record.sql:
                return record.statement_id
        raise KeyError(f"no statement containing {contains!r}")

    def wait_until_polled(self, contains: str, timeout_s: float = 30.0) -> None:
        """Block until the client polled the status of a statement containing `contains`
        (by then the connector knows the statement's id, so `cursor.cancel()` reaches it)."""

        def polled() -> bool:
            try:
                wanted = self.statement_id(contains)
            except KeyError:
                return False
            return wanted in self.records.polls

        if not self.records.wait_for(polled, timeout_s):
            raise TimeoutError(f"no status poll for a statement containing {contains!r}")

    def hold(self, contains: str) -> threading.Event:
        """Hold statements whose SQL contains `contains` (they stay RUNNING) until the returned
        event is set, e.g. to kill a client in the middle of a write."""
        return self.service.hold(contains)

    def wait_until_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no statement's work is running; False on timeout."""
        return self.service.join_all(timeout_s)

    def wait_until_running(self, contains: str, timeout_s: float = 30.0) -> None:
        """Block until a statement whose SQL contains `contains` is running."""

        def running() -> bool:
            return any(
                contains in op.sql and op.state == States.RUNNING_STATE
                for op in self.service.running()
            )

        if not self.records.wait_for(running, timeout_s):
            raise TimeoutError(f"no running statement containing {contains!r}")


@contextlib.contextmanager
def serve_warehouse(
    executor: Executor,
    *,
    token: str | None = DEFAULT_TOKEN,
    authorize: Callable[[str | None], bool] | None = None,
    upstream: str | None = None,
    warehouse_id: str = "loopback",
    volumes_dir: Path | None = None,
    settings: WarehouseSettings | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> Iterator[Warehouse]:
    """Serve a warehouse on 127.0.0.1 (ephemeral port) until the block ends.

    `token`: the bearer token required on every call (None accepts any); `authorize` decides
    instead when given (it gets the Authorization header). `upstream`: a workspace API (e.g. the
    fake workspace) that requests to other paths are relayed to, so one host serves both, as a
    real workspace does. `volumes_dir`: where `/Volumes/...` files live (a temporary directory
    by default). `tls`: (CA file, certificate, key): serve https with that certificate.
    """
    with contextlib.ExitStack() as stack:
        if volumes_dir is None:
            volumes_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="volumes-")))
        httpd = _HTTPServer(_Handler)
        stack.callback(httpd.server_close)
        scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[1]), str(tls[2]))
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
            scheme = "https"
        host, port = "127.0.0.1", int(httpd.server_address[1])
        http_path = f"/sql/1.0/warehouses/{warehouse_id}"
        records = Records()
        staging = StagingArea(volumes_dir, f"{scheme}://{host}:{port}")
        service = WarehouseService(executor, settings or WarehouseSettings(), records, staging)
        httpd.processor = TCLIService.Processor(service)
        httpd.processor_settings = service.settings
        httpd.http_path = http_path
        httpd.warehouse_id = warehouse_id
        if authorize is not None:
            httpd.authorize = authorize
        elif token is not None:
            expected = f"Bearer {token}"
            httpd.authorize = lambda header: header == expected
        httpd.upstream = upstream
        httpd.records = records
        httpd.staging = staging
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="warehouse-http"
        )
        thread.start()
        try:
            yield Warehouse(
                host=str(host),
                port=int(port),
                http_path=http_path,
                warehouse_id=warehouse_id,
                token=token,
                volumes_dir=volumes_dir,
                records=records,
                service=service,
                ca_file=tls[0] if tls is not None else None,
            )
        finally:
            httpd.shutdown()
            thread.join()
            httpd.close_connections()
            service.shutdown()
