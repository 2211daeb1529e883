# mypy: disable-error-code="no-untyped-call"
# (the Thrift classes generated into the connector carry no type hints)
"""The TCLIService handler: what the databricks-sql-connector's Thrift backend calls.

Every RPC answers with a `TStatus`; a failing statement is an operation in ERROR_STATE (the
connector raises `ServerOperationError` with its message), a bad handle an error status.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa
import sqlglot
from databricks.sql.thrift_api.TCLIService import TCLIService, ttypes
from sqlglot import exp

from .arrow_wire import row_set, schema_bytes, table_schema
from .commits import DeltaCommits
from .context import Executor, MetadataSource, Namespace, StatementContext
from .operations import Operation, Session, States, new_guid
from .params import ParameterError, decode_parameters
from .records import Records, SessionRecord, StatementRecord
from .staging import StagingArea, create_volume, create_volume_command, parse_staging_command

logger = logging.getLogger(__name__)

_Response = TypeVar("_Response")
_OK = ttypes.TStatus(statusCode=ttypes.TStatusCode.SUCCESS_STATUS)
_USE = re.compile(r"^\s*USE\s", re.I)
_CANCELLED = "The operation was cancelled."
_AI_QUERY = re.compile(r"\bai_query\s*\(", re.I)
# ASSUMPTION (the wording): the ai_query reference says only that it is not available on SQL
# Classic warehouses; what a Classic warehouse answers is not documented.
CLASSIC_AI_QUERY = "AI functions (ai_query) are not available on SQL Classic warehouses"
# What a session may set: the session-settable configuration parameters ("Databricks SQL does not
# support setting Spark configurations that aren't listed", docs: sql-ref-parameters; QUERY_TAGS:
# docs sql/user/queries/query-tags), any case, and the two the connector sets itself
# (databricks-sql-connector `thrift_backend.open_session`, `client.Connection`). Anything else
# fails OpenSession with "Configuration <name> is not available." (error captured in
# databricks/splunk-integration#50).
SESSION_PARAMETERS = frozenset(
    {
        "ANSI_MODE",
        "LEGACY_TIME_PARSER_POLICY",
        "MAX_FILE_PARTITION_BYTES",
        "STATEMENT_TIMEOUT",
        "TIMEZONE",
        "USE_CACHED_RESULT",
        "QUERY_TAGS",
    }
)
CONNECTOR_SESSION_CONFS = frozenset(
    {
        "spark.thriftserver.arrowBasedRowSet.timestampAsString",
        "spark.sql.thriftserver.metadata.metricview.enabled",
    }
)


def session_refusal(configuration: Mapping[str, str]) -> str | None:
    """Why OpenSession refuses this session configuration, or None."""
    for name in configuration:
        if name.upper() not in SESSION_PARAMETERS and name not in CONNECTOR_SESSION_CONFS:
            return f"[CONFIG_NOT_AVAILABLE] Configuration {name} is not available. SQLSTATE: 42K0I"
    return None


@dataclass(frozen=True)
class WarehouseSettings:
    # What OpenSession reports; the connector needs >= V2 and sends native parameters from V8.
    protocol_version: int = ttypes.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V8
    # A status poll waits this long for the statement to end before answering RUNNING.
    poll_wait_s: float = 0.2
    # A synchronous execute waits this long before answering without direct results.
    direct_results_wait_s: float = 0.5
    # Report RUNNING to this many status polls per statement, even when it has ended.
    running_polls: int = 0
    # Rows per Arrow record batch inside one fetch.
    arrow_batch_rows: int = 4096
    # Compress Arrow batches with LZ4 frames when the client says it can decompress them.
    lz4: bool = True
    # What the warehouses API reports (`warehouse_type`): ai_query does not run on CLASSIC.
    warehouse_type: str = "PRO"
    serverless: bool = True
    # Tables (catalog.schema.table, lower case) the user may read but lacks Unity Catalog's
    # MODIFY on: a statement that writes one is refused (creating a new one is not a write of
    # it). A set a test may change while the warehouse runs.
    no_modify: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Only what databricks-sdk parses (`GetWarehouseResponseWarehouseType`; another value
        # reads as None), and serverless only on PRO ("If you want to use serverless compute,
        # you must set to PRO", `GetWarehouseResponse.warehouse_type`).
        from databricks.sdk.service.sql import GetWarehouseResponseWarehouseType as Kind

        if self.warehouse_type not in {kind.value for kind in Kind}:
            raise ValueError(f"warehouse_type {self.warehouse_type!r} is no {Kind.__name__}")
        if self.serverless and self.warehouse_type != "PRO":
            raise ValueError(f"a {self.warehouse_type} warehouse cannot be serverless")


def _refuse(message: str) -> Callable[[], pa.Table | None]:
    def refuse() -> pa.Table | None:
        raise RuntimeError(message)

    return refuse


class _BadHandle(Exception):
    pass


_SQLSTATE = re.compile(
    r"SQLSTATE: ([0-9A-Z]{5})(?: \(line \d+, pos \d+\)\n\n== SQL ==\n.*)?\s*$", re.S
)


def _sqlstate(message: str) -> str:
    """The SQLSTATE a failed statement reports: the one its message ends with (Databricks' error
    messages end `SQLSTATE: <code>`, e.g. raise_error's P0001; a parse error's is followed by
    its position and the `== SQL ==` excerpt), else 42000."""
    found = _SQLSTATE.search(message)
    return found.group(1) if found else "42000"


def insufficient_privileges(privilege: str, kind: str, name: str) -> str:
    """Unity Catalog's refusal, checked when the statement is analysed (before it runs: no
    ai_query call is made), as the connector reports it (databricks-solutions/
    databricks-apps-cookbook#18: the class, a line break, then the privilege and object)."""
    return (
        f"[INSUFFICIENT_PERMISSIONS] Insufficient privileges:\nUser does not have {privilege} "
        f"on {kind} '{name}'. SQLSTATE: 42501"
    )


def _error(message: str, code: int = ttypes.TStatusCode.ERROR_STATUS) -> ttypes.TStatus:
    return ttypes.TStatus(statusCode=code, errorMessage=message, displayMessage=message)


def _handle(guid: bytes) -> ttypes.THandleIdentifier:
    return ttypes.THandleIdentifier(guid=guid, secret=new_guid())


def _use_target(sql: str, namespace: Namespace) -> Namespace | None:
    """The namespace after a `USE ...` statement, or None when `sql` is not one."""
    if not _USE.match(sql):
        return None
    tree = sqlglot.parse_one(sql, read="databricks")
    if not isinstance(tree, exp.Use) or not isinstance(tree.this, exp.Table):
        return None
    kind = tree.args.get("kind")
    table = tree.this
    if kind is not None and kind.name.upper() == "CATALOG":
        return Namespace(catalog=table.name, schema="default")
    if table.args.get("db") is not None:
        return Namespace(catalog=table.args["db"].name, schema=table.name)
    return Namespace(catalog=namespace.catalog, schema=table.name)


class WarehouseService(TCLIService.Iface):
    def __init__(
        self,
        executor: Executor,
        settings: WarehouseSettings,
        records: Records,
        staging: StagingArea,
    ) -> None:
        self._executor = executor
        self._settings = settings
        self._records = records
        self._staging = staging
        self._lock = threading.Lock()
        self._sessions: dict[bytes, Session] = {}
        self._operations: dict[bytes, Operation] = {}
        self._started: list[Operation] = []  # every operation, for shutdown to join
        self._holds: list[tuple[str, threading.Event]] = []
        # Tables' versions: a write overtaken by another commit fails as on Delta (commits.py).
        self.commits = DeltaCommits()

    # ---- sessions -------------------------------------------------------------------------

    @property
    def settings(self) -> WarehouseSettings:
        return self._settings

    def OpenSession(self, req: ttypes.TOpenSessionReq) -> ttypes.TOpenSessionResp:
        configuration = {str(k): str(v) for k, v in (req.configuration or {}).items()}
        refusal = session_refusal(configuration)
        if refusal is not None:
            return ttypes.TOpenSessionResp(status=_error(refusal))
        ns = req.initialNamespace
        namespace = Namespace()
        if ns is not None and ns.catalogName:
            namespace.catalog = ns.catalogName
        if ns is not None and ns.schemaName:
            namespace.schema = ns.schemaName
        session = Session(new_guid(), namespace, configuration, authorization=None)
        with self._lock:
            self._sessions[session.guid] = session
        self._records.add(
            self._records.sessions,
            SessionRecord(
                session_id=session.hex_id,
                configuration=configuration,
                catalog=ns.catalogName if ns else None,
                schema=ns.schemaName if ns else None,
                client_protocol=req.client_protocol_i64 or req.client_protocol,
            ),
        )
        return ttypes.TOpenSessionResp(
            status=_OK,
            serverProtocolVersion=self._settings.protocol_version,
            sessionHandle=ttypes.TSessionHandle(sessionId=_handle(session.guid)),
            configuration=configuration,
            initialNamespace=ttypes.TNamespace(
                catalogName=namespace.catalog, schemaName=namespace.schema
            ),
            canUseMultipleCatalogs=True,
        )

    def CloseSession(self, req: ttypes.TCloseSessionReq) -> ttypes.TCloseSessionResp:
        try:
            session = self._session(req.sessionHandle)
        except _BadHandle as bad:
            return ttypes.TCloseSessionResp(status=_error(str(bad), _invalid()))
        session.closed = True
        with self._lock:
            mine = [op for op in self._operations.values() if op.session is session]
        for op in mine:
            self._close(op)
        end_session = getattr(self._executor, "end_session", None)
        if callable(end_session):
            end_session(session.hex_id)
        self._records.add(self._records.closed_sessions, session.hex_id)
        return ttypes.TCloseSessionResp(status=_OK)

    def GetInfo(self, req: ttypes.TGetInfoReq) -> ttypes.TGetInfoResp:
        values = {
            ttypes.TGetInfoType.CLI_SERVER_NAME: "Databricks SQL (loopback)",
            ttypes.TGetInfoType.CLI_DBMS_NAME: "Spark SQL",
            ttypes.TGetInfoType.CLI_DBMS_VER: "4.0.0",
        }
        value = values.get(req.infoType)
        if value is None:
            return ttypes.TGetInfoResp(status=_error(f"unsupported info type {req.infoType}"))
        return ttypes.TGetInfoResp(status=_OK, infoValue=ttypes.TGetInfoValue(stringValue=value))

    # ---- statements -----------------------------------------------------------------------

    def ExecuteStatement(self, req: ttypes.TExecuteStatementReq) -> ttypes.TExecuteStatementResp:
        try:
            session = self._session(req.sessionHandle)
        except _BadHandle as bad:
            return ttypes.TExecuteStatementResp(status=_error(str(bad), _invalid()))
        sql = req.statement or ""
        try:
            params = decode_parameters(req.parameters)
        except (ParameterError, ValueError) as bad:
            return ttypes.TExecuteStatementResp(status=_error(f"bad parameter: {bad}"))
        overlay = {str(k): str(v) for k, v in (req.confOverlay or {}).items()}
        statement_conf = {str(k): str(v) for k, v in (req.statementConf or {}).items()}
        context = StatementContext(
            statement_id=str(uuid.uuid4()),
            namespace=session.namespace,
            session_id=session.hex_id,
            session_conf=dict(session.configuration),
            statement_conf={**overlay, **statement_conf},
        )
        can_lz4 = bool(req.canDecompressLZ4Result) and self._settings.lz4
        op = Operation(
            guid=new_guid(),
            session=session,
            sql=sql,
            context=context,
            lz4_compressed=can_lz4,
            row_limit=req.resultRowLimit,
            forced_running_polls=self._settings.running_polls,
        )
        context.statement_id = op.hex_id
        self._records.add(
            self._records.executions,
            StatementRecord(
                statement_id=op.hex_id,
                session_id=session.hex_id,
                sql=sql,
                params=params,
                conf_overlay=context.statement_conf,
                session_conf=context.session_conf,
                run_async=bool(req.runAsync),
                direct_results=req.getDirectResults is not None,
            ),
        )
        work = self._work_for(op, sql, params)
        self._start(op, work)
        if not req.runAsync:
            op.wait(timeout=None)  # type: ignore[arg-type]
        return ttypes.TExecuteStatementResp(
            status=_OK,
            operationHandle=self._op_handle(op),
            directResults=self._direct_results(op, req.getDirectResults),
        )

    def _work_for(
        self, op: Operation, sql: str, params: Mapping[str, Any]
    ) -> Callable[[], pa.Table | None]:
        session = op.session
        command = parse_staging_command(sql)
        if command is not None:
            op.is_staging = True
            return lambda: self._staging.prepare(command)
        volume = create_volume_command(sql)
        if volume is not None:
            return lambda: create_volume(self._staging.volumes_dir, *volume)
        try:
            target = _use_target(sql, session.namespace)
        except sqlglot.errors.ParseError:
            target = None
        if target is not None:
            chosen = target

            def use() -> None:
                session.namespace.catalog = chosen.catalog
                session.namespace.schema = chosen.schema

            return use
        if self._settings.warehouse_type == "CLASSIC" and _AI_QUERY.search(sql):
            return _refuse(CLASSIC_AI_QUERY)
        executor = self._executor
        gates = [gate for pattern, gate in list(self._holds) if pattern in sql]
        # The version it starts from: when it arrives, before it is held.
        snapshot = self.commits.begin(sql, session.namespace)
        write = snapshot.write if snapshot is not None else None
        if write and write.operation != "CREATE TABLE" and write.table in self._settings.no_modify:
            return _refuse(insufficient_privileges("MODIFY", "Table", write.table))

        def run() -> pa.Table | None:
            for gate in gates:  # a held statement waits (cancellably) until released
                while not gate.wait(0.05):
                    if op.context.cancelled.is_set():
                        raise RuntimeError("statement cancelled while held")
            if snapshot is None:
                return executor(sql, params)
            rehearse = _rolled_back(executor, sql, params) if _can_roll_back(executor) else None
            return self.commits.commit(snapshot, lambda: executor(sql, params), rehearse)

        return run

    def _start(self, op: Operation, work: Callable[[], pa.Table | None]) -> None:
        with self._lock:
            self._operations[op.guid] = op
            self._started.append(op)
        op.start(work)
        self._records.notify()

    def GetOperationStatus(
        self, req: ttypes.TGetOperationStatusReq
    ) -> ttypes.TGetOperationStatusResp:
        try:
            op = self._operation(req.operationHandle)
        except _BadHandle as bad:
            return ttypes.TGetOperationStatusResp(status=_error(str(bad), _invalid()))
        self._records.add(self._records.polls, op.hex_id)
        op.wait(self._settings.poll_wait_s)
        return self._status(op, op.report_state())

    def _status(self, op: Operation, state: int) -> ttypes.TGetOperationStatusResp:
        message = op.error if state == States.ERROR_STATE else None
        return ttypes.TGetOperationStatusResp(
            status=_OK,
            operationState=state,
            errorMessage=message,
            displayMessage=message,
            sqlState=_sqlstate(message) if message else None,
            hasResultSet=True,
            numModifiedRows=op.modified_rows() if state == States.FINISHED_STATE else None,
        )

    def GetResultSetMetadata(
        self, req: ttypes.TGetResultSetMetadataReq
    ) -> ttypes.TGetResultSetMetadataResp:
        try:
            op = self._operation(req.operationHandle)
        except _BadHandle as bad:
            return ttypes.TGetResultSetMetadataResp(status=_error(str(bad), _invalid()))
        problem = self._not_fetchable(op)
        if problem is not None:
            return ttypes.TGetResultSetMetadataResp(status=_error(problem))
        return self._metadata(op)

    def _metadata(self, op: Operation) -> ttypes.TGetResultSetMetadataResp:
        return ttypes.TGetResultSetMetadataResp(
            status=_OK,
            schema=table_schema(op.result.schema),
            resultFormat=ttypes.TSparkRowSetType.ARROW_BASED_SET,
            lz4Compressed=op.lz4_compressed,
            arrowSchema=schema_bytes(op.result.schema),
            isStagingOperation=op.is_staging,
        )

    def FetchResults(self, req: ttypes.TFetchResultsReq) -> ttypes.TFetchResultsResp:
        try:
            op = self._operation(req.operationHandle)
        except _BadHandle as bad:
            return ttypes.TFetchResultsResp(status=_error(str(bad), _invalid()))
        problem = self._not_fetchable(op)
        if problem is not None:
            return ttypes.TFetchResultsResp(status=_error(problem))
        if req.orientation == ttypes.TFetchOrientation.FETCH_FIRST:
            op.offset = 0
        return self._fetch(op, req.maxRows or 0, req.maxBytes or 0)

    def _fetch(self, op: Operation, max_rows: int, max_bytes: int) -> ttypes.TFetchResultsResp:
        chunk = row_set(
            op.result,
            op.offset,
            max_rows=max_rows,
            max_bytes=max_bytes,
            batch_rows=self._settings.arrow_batch_rows,
            lz4_compressed=op.lz4_compressed,
        )
        self._records.add(self._records.fetches, (op.hex_id, chunk.next_offset - op.offset))
        op.offset = chunk.next_offset
        return ttypes.TFetchResultsResp(
            status=_OK,
            hasMoreRows=chunk.next_offset < op.result.num_rows,
            results=chunk.row_set,
            resultSetMetadata=self._metadata(op),
        )

    def _not_fetchable(self, op: Operation) -> str | None:
        if op.state == States.CANCELED_STATE:
            return _CANCELLED
        if op.state == States.ERROR_STATE:
            return op.error or "the statement failed"
        if op.state != States.FINISHED_STATE:
            return "the statement is still running"
        return None

    def _direct_results(
        self, op: Operation, wanted: ttypes.TSparkGetDirectResults | None
    ) -> ttypes.TSparkDirectResults | None:
        """Results inline with the execute reply, as a warehouse sends them for quick statements."""
        if wanted is None or not op.wait(self._settings.direct_results_wait_s):
            return None
        if op.forced_running_polls > 0:
            return None
        status = self._status(op, op.state)
        if op.state != States.FINISHED_STATE:
            return ttypes.TSparkDirectResults(operationStatus=status)
        fetch = self._fetch(op, wanted.maxRows or 0, wanted.maxBytes or 0)
        close = None
        if not fetch.hasMoreRows:
            close = ttypes.TCloseOperationResp(status=_OK)
            self._close(op)
        return ttypes.TSparkDirectResults(
            operationStatus=status,
            resultSetMetadata=fetch.resultSetMetadata,
            resultSet=fetch,
            closeOperation=close,
        )

    def CancelOperation(self, req: ttypes.TCancelOperationReq) -> ttypes.TCancelOperationResp:
        try:
            op = self._operation(req.operationHandle)
        except _BadHandle as bad:
            return ttypes.TCancelOperationResp(status=_error(str(bad), _invalid()))
        if op.cancel():
            record = next(
                (r for r in self._records.executions if r.statement_id == op.hex_id), None
            )
            if record is not None:
                self._records.add(self._records.cancelled, record)
        return ttypes.TCancelOperationResp(status=_OK)

    def CloseOperation(self, req: ttypes.TCloseOperationReq) -> ttypes.TCloseOperationResp:
        try:
            op = self._operation(req.operationHandle)
        except _BadHandle as bad:
            return ttypes.TCloseOperationResp(status=_error(str(bad), _invalid()))
        self._close(op)
        return ttypes.TCloseOperationResp(status=_OK)

    def _close(self, op: Operation) -> None:
        op.cancel()  # a close while running stops the work too
        op.closed = True
        with self._lock:
            self._operations.pop(op.guid, None)

    # ---- metadata calls -------------------------------------------------------------------

    def GetCatalogs(self, req: ttypes.TGetCatalogsReq) -> ttypes.TGetCatalogsResp:
        return self._metadata_call(ttypes.TGetCatalogsResp, req, "catalogs", {})

    def GetSchemas(self, req: ttypes.TGetSchemasReq) -> ttypes.TGetSchemasResp:
        filters = {"catalog": req.catalogName, "schema": req.schemaName}
        return self._metadata_call(ttypes.TGetSchemasResp, req, "schemas", filters)

    def GetTables(self, req: ttypes.TGetTablesReq) -> ttypes.TGetTablesResp:
        filters = {"catalog": req.catalogName, "schema": req.schemaName, "table": req.tableName}
        return self._metadata_call(ttypes.TGetTablesResp, req, "tables", filters)

    def GetColumns(self, req: ttypes.TGetColumnsReq) -> ttypes.TGetColumnsResp:
        filters = {
            "catalog": req.catalogName,
            "schema": req.schemaName,
            "table": req.tableName,
            "column": req.columnName,
        }
        return self._metadata_call(ttypes.TGetColumnsResp, req, "columns", filters)

    def _metadata_call(
        self,
        response: Callable[..., _Response],
        req: Any,
        kind: str,
        filters: dict[str, str | None],
    ) -> _Response:
        try:
            session = self._session(req.sessionHandle)
        except _BadHandle as bad:
            return response(status=_error(str(bad), _invalid()))
        source = self._executor
        if not callable(getattr(source, "metadata", None)):
            return response(status=_error(f"this warehouse's executor cannot list {kind}"))
        context = StatementContext(
            statement_id="", namespace=session.namespace, session_id=session.hex_id
        )
        op = Operation(
            guid=new_guid(),
            session=session,
            sql=f"<{kind}>",
            context=context,
            lz4_compressed=False,
        )
        metadata_source: MetadataSource = source  # type: ignore[assignment]
        self._start(op, lambda: metadata_source.metadata(kind, filters))
        op.wait(timeout=None)  # type: ignore[arg-type]
        return response(
            status=_OK,
            operationHandle=self._op_handle(op),
            directResults=self._direct_results(op, req.getDirectResults),
        )

    # ---- handles --------------------------------------------------------------------------

    def _session(self, handle: ttypes.TSessionHandle | None) -> Session:
        guid = handle.sessionId.guid if handle is not None and handle.sessionId else None
        with self._lock:
            session = self._sessions.get(guid) if guid is not None else None
        if session is None or session.closed:
            raise _BadHandle("invalid or closed session handle")
        return session

    def _operation(self, handle: ttypes.TOperationHandle | None) -> Operation:
        guid = handle.operationId.guid if handle is not None and handle.operationId else None
        with self._lock:
            op = self._operations.get(guid) if guid is not None else None
        if op is None:
            raise _BadHandle("invalid or closed operation handle")
        return op

    def _op_handle(self, op: Operation) -> ttypes.TOperationHandle:
        return ttypes.TOperationHandle(
            operationId=_handle(op.guid),
            operationType=ttypes.TOperationType.EXECUTE_STATEMENT,
            hasResultSet=True,
        )

    # ---- for the server and tests ---------------------------------------------------------

    def hold(self, contains: str) -> threading.Event:
        """Statements containing `contains` wait before running until the event is set."""
        gate = threading.Event()
        with self._lock:
            self._holds.append((contains, gate))
        return gate

    def operations(self, contains: str) -> list[Operation]:
        """Every statement received whose SQL contains `contains`, in arrival order (ended or
        not: its `state` and `error` say how it ended)."""
        with self._lock:
            return [op for op in self._started if contains in op.sql]

    def running(self) -> list[Operation]:
        with self._lock:
            return [op for op in self._operations.values() if op.state == States.RUNNING_STATE]

    def join_all(self, timeout_s: float) -> bool:
        """Wait for every statement's worker thread; False if some still run after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            ops = list(self._started)
        for op in ops:
            op.join(max(deadline - time.monotonic(), 0.0))
        return not any(op.thread is not None and op.thread.is_alive() for op in ops)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancel what still runs and wait for the worker threads to end."""
        with self._lock:
            ops = list(self._started)
        for op in ops:
            op.cancel()
        deadline = time.monotonic() + timeout_s
        for op in ops:
            op.join(max(deadline - time.monotonic(), 0.0))


def _can_roll_back(executor: Executor) -> bool:
    return bool(getattr(executor, "rolls_back", False))


def _rolled_back(executor: Executor, sql: str, params: Mapping[str, Any]) -> Callable[[], None]:
    """Run `sql` in the statement's session inside a transaction that is rolled back."""

    def run() -> None:
        executor("BEGIN", {})
        try:
            executor(sql, params)
        finally:
            executor("ROLLBACK", {})

    return run


def _invalid() -> int:
    return int(ttypes.TStatusCode.INVALID_HANDLE_STATUS)
