"""The `databricks-sql` engine: the job's Databricks SQL on a SQL warehouse, through
databricks-sql-connector.

- Where and who: `databricks_sql_connect` (target settings, environment, databricks-sdk auth).
- Statements are submitted asynchronously, tagged with the job and run (`QUERY_TAGS`), and polled;
  Ctrl-C cancels the running statement on the warehouse before it propagates.
- Results stream out as Arrow batches (`fetchmany_arrow`), never as Python rows.
- Answers from the REST fallback are bulk-loaded into a staging table (`databricks_sql_staging`),
  merged into the target by the planner's `write_sql`, and the staging table is dropped. The
  staging table's name is fixed per target table, so a run killed mid-write leaves nothing that
  the next run does not replace, and every write mode is idempotent by key.
- A statement that another run's commit to the same table overtook (a Delta write conflict) is
  run again, a bounded number of times (`write_conflicts`): it changed nothing, and run again it
  reads the table as the other run left it.

Settings: host, http_path or warehouse_id, profile, port, scheme, catalog, schema,
staging_volume, telemetry, tls_ca_file (a private CA to trust), poll_interval_s, insert_rows,
conflict_attempts and conflict_backoff_s (retries of a statement in a write conflict), job_name
and run_id (from the runner).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlglot import exp

from agentbatch.agent.waiting import said_if_slow
from agentbatch.engines import write_conflicts
from agentbatch.engines.base import WriteRequest, WriteStats, error_line
from agentbatch.engines.databricks_sql.connect import (
    Credentials,
    http_path,
    sdk_credentials,
    warehouse_address,
    warehouse_id,
)
from agentbatch.engines.databricks_sql.staging import (
    JsonParameterLoader,
    VolumeLoader,
    column_types_sql,
    create_table_sql,
    passthrough_refusal,
    volume_path,
)
from agentbatch.errors import (
    ConfigError,
    EngineError,
    MissingDependencyError,
    NotSupportedError,
    SourceValueError,
    UsageError,
)
from agentbatch.sql import quoting
from agentbatch.sql.quoting import table_parts

if TYPE_CHECKING:
    import pyarrow as pa
    from databricks.sql.client import Connection, Cursor

log = logging.getLogger(__name__)

T = TypeVar("T")
_STAGED_SUFFIX = "__agentbatch_staged"
# A staging table named for a run older than this is a killed run's leftover (a write phase
# takes minutes to hours).
_STAGING_KEPT_S = 24 * 3600.0
# Unity Catalog refuses an object name over 255 characters (docs: sql-ref-names); a target's name
# may have that many, so a staging table named after it is shortened to fit, with a hash of the
# name and of the run id it drops (`_staging_name`). Room is kept for a run id of the runner's
# form, `YYYYmmddTHHMMSS_<8 hex>`.
_UC_NAME_LIMIT = 255
# A statement's ANSI CAST failed on a value (Databricks' error classes CAST_INVALID_INPUT, SQLSTATE
# 22018, and CAST_OVERFLOW, 22003: docs.databricks.com error-messages/error-classes); not a
# write's own overflow (CAST_OVERFLOW_IN_TABLE_INSERT), which no job SQL value causes.
_SOURCE_VALUE = re.compile(r"\[(CAST_INVALID_INPUT|CAST_OVERFLOW)\] ")
_RUN_ID_CHARS = 24


# Unity Catalog's refusal of a privilege (SQLSTATE 42501).
_INSUFFICIENT_PERMISSIONS = "[INSUFFICIENT_PERMISSIONS]"


def _quoted_table(parts: tuple[str, ...]) -> str:
    node = exp.Table(
        this=exp.to_identifier(parts[-1], quoted=True),
        db=exp.to_identifier(parts[-2], quoted=True) if len(parts) > 1 else None,
        catalog=exp.to_identifier(parts[-3], quoted=True) if len(parts) > 2 else None,
    )
    return node.sql(dialect=quoting.DIALECT)


def _fit(text: str, room: int) -> str:
    """`text`, or when it is longer than `room` characters, its start and a hash of it (of its
    lower case: Unity Catalog names are stored in lower case) in `room` characters."""
    if len(text) <= room:
        return text
    digest = hashlib.sha256(text.lower().encode("utf-8")).hexdigest()[:8]
    return f"{text[: room - 9]}_{digest}"


def _staging_prefixes(name: str) -> tuple[str, str]:
    """The two forms a staging table of the target table `name` is named with, before the run
    id: `<name>__agentbatch_staged_`, and the one with `name` shortened so that the prefix and a
    run id fit in a Unity Catalog name."""
    plain = f"{name}{_STAGED_SUFFIX}_"
    room = _UC_NAME_LIMIT - len(plain) + len(name) - _RUN_ID_CHARS
    return plain, f"{_fit(name, room)}{_STAGED_SUFFIX}_"


def _staging_name(name: str, run: str) -> str:
    """The staging table of the target table `name` for `run`: `<name>__agentbatch_staged_<run>`
    when that fits in a Unity Catalog name (at most 255 characters), else with the name (and a
    run id longer than the runner's) shortened and hashed."""
    plain, short = _staging_prefixes(name)
    if len(plain) + len(run) <= _UC_NAME_LIMIT:
        return plain + run
    return short + _fit(run, _UC_NAME_LIMIT - len(short))


def _run_started(run: str) -> float | None:
    """When the run a staging table is named for started (RunOptions.started: UTC
    `YYYYmmddTHHMMSS_...`), in seconds since the epoch; None for another name."""
    import calendar

    try:
        return float(calendar.timegm(time.strptime(run[:15].upper(), "%Y%m%dT%H%M%S")))
    except ValueError:
        return None


_REPORT_EVERY_S = 30.0


def _connector() -> Any:
    try:
        import databricks.sql
    except ImportError:
        raise MissingDependencyError("databricks-sql-connector", "sql") from None
    return databricks.sql


class DatabricksSQLEngine:
    name: ClassVar[str] = "databricks-sql"
    dialect: ClassVar[str] = "databricks"
    native_ai_query: ClassVar[bool] = True
    distributed_calls: ClassVar[bool] = False

    @classmethod
    def staging_relation(cls, table: str, run_id: str) -> str:
        """A real table beside the target (a warehouse has no session-free temp relation), one
        per run: two runs at once must not merge each other's answers."""
        parts = table_parts(table)
        run = re.sub(r"[^A-Za-z0-9_]", "_", run_id)
        return _quoted_table((*parts[:-1], _staging_name(parts[-1], run)))

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        tables: Mapping[str, Any] | None = None,
        output_tables: Iterable[str] = (),
    ) -> None:
        if tables:
            raise UsageError(
                "--table maps tables to local files; it applies to the local and spark targets"
            )
        self.settings = dict(settings or {})
        self.catalog: str | None = self.settings.get("catalog")
        self.schema: str | None = self.settings.get("schema")
        self.run_id = str(self.settings.get("run_id") or uuid.uuid4().hex[:12])
        volume = self.settings.get("staging_volume")
        self.staging_volume = volume_path(str(volume)) if volume else None
        self.poll_interval_s = float(self.settings.get("poll_interval_s", 0.05))
        self.poll_max_s = float(self.settings.get("poll_max_s", 1.0))
        self.insert_rows = int(self.settings.get("insert_rows", 5_000))
        self.conflict_attempts = int(
            self.settings.get("conflict_attempts", write_conflicts.ATTEMPTS)
        )
        self.conflict_backoff_s = float(
            self.settings.get("conflict_backoff_s", write_conflicts.BACKOFF_S)
        )
        tags = {"agentbatch_job": self.settings.get("job_name"), "agentbatch_run": self.run_id}
        self.query_tags: dict[str, str | None] = {k: str(v) for k, v in tags.items() if v}
        self._connection: Connection | None = None
        self._credentials: Credentials | None = None
        # Submissions run here so a Ctrl-C in the middle of one still learns the statement id.
        self._submitter = ThreadPoolExecutor(1, thread_name_prefix="agentbatch-sql-submit")
        self.query_ids: list[str] = []  # every statement this engine ran, for tracing

    # -- the Engine protocol --------------------------------------------------------------------

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        def statement() -> None:
            with self._statement(sql, params):
                pass

        write_conflicts.retrying(
            statement,
            engine="databricks-sql",
            attempts=self.conflict_attempts,
            base_s=self.conflict_backoff_s,
        )

    def fetch_batches(
        self, sql: str, params: Mapping[str, Any] | None = None, *, batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        with self._statement(sql, params, arraysize=batch_rows) as cursor:
            self._guard(cursor.get_async_execution_result)
            while True:
                table = self._guard(lambda: cursor.fetchmany_arrow(batch_rows))
                if table.num_rows == 0:
                    return
                yield from table.combine_chunks().to_batches(max_chunksize=batch_rows)

    def fetch_one(self, sql: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        with self._statement(sql, params, arraysize=1) as cursor:
            self._guard(cursor.get_async_execution_result)
            table = self._guard(lambda: cursor.fetchmany_arrow(1))
        if table.num_rows:
            first: dict[str, Any] = table.to_pylist()[0]
            return first
        return {name: None for name in table.column_names}

    def table_exists(self, table: str) -> bool:
        parts = table_parts(table)
        catalog = parts[-3] if len(parts) > 2 else self.catalog
        schema = parts[-2] if len(parts) > 1 else self.schema
        with self._cursor() as cursor:
            self._guard(
                lambda: cursor.tables(
                    catalog_name=catalog, schema_name=schema, table_name=parts[-1]
                )
            )
            rows = self._guard(cursor.fetchall)
        # Metadata names are LIKE patterns (`_` matches any character): compare exactly.
        return any(
            str(row[2]).lower() == parts[-1].lower()
            and (schema is None or str(row[1]).lower() == schema.lower())
            for row in rows
        )

    def write_results(
        self, request: WriteRequest, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> WriteStats:
        staged = request.staging_name
        self._drop_old_staging(request.table)
        self.execute(create_table_sql(staged, schema))
        loader = self._loader(staged, request.key)
        try:
            rows = loader.load(staged, batches, schema)
            for sql in request.write_sql:
                self.execute(sql)
        finally:
            # Whatever happened, the rows are in the target or not: the staging table goes. A
            # failed drop only leaves it behind (a later run drops it): it fails no run.
            try:
                self.execute(f"DROP TABLE IF EXISTS {staged}")
            except Exception as err:
                log.warning("could not drop the staging table %s: %s", staged, err)
        too_large = getattr(loader, "too_large", [])
        if too_large:
            shown = ", ".join(too_large[:5]) + (", ..." if len(too_large) > 5 else "")
            raise EngineError(
                f"databricks-sql: {rows} row(s) written; {len(too_large)} row(s) over the 1 MB a "
                f"statement's parameters may carry were not: {request.key} {shown}. Set the "
                "target's staging_volume (staging through a volume has no such limit) and run "
                "again: their answers are kept in the checkpoint, not paid again"
            )
        return WriteStats(rows_written=rows)

    def check_passthrough(self, inputs_sql: str, columns: Sequence[str]) -> None:
        """Refuse, before any call is paid, a column of the REST fallback's inputs that staging
        cannot write back exactly (`staging.passthrough_refusal`), by its type on the warehouse."""
        types = self.fetch_one(column_types_sql(inputs_sql, columns))
        problems = [
            problem
            for number, name in enumerate(columns)
            if (problem := passthrough_refusal(name, str(types.get(f"c{number}") or "")))
        ]
        if problems:
            raise NotSupportedError(
                "databricks-sql: " + "; ".join(problems) + ". Nothing was sent to the agent"
            )

    def _drop_old_staging(self, table: str) -> None:
        """Drop staging tables of `table` that runs killed during their write left behind: those
        named for a run that started more than a day ago (a run at work keeps its own)."""
        parts = table_parts(table)
        catalog = parts[-3] if len(parts) > 2 else self.catalog
        schema = parts[-2] if len(parts) > 1 else self.schema
        prefixes = [prefix.lower() for prefix in _staging_prefixes(parts[-1])]
        try:
            with self._cursor() as cursor:
                self._guard(lambda: cursor.tables(catalog_name=catalog, schema_name=schema))
                names = [str(row[2]) for row in self._guard(cursor.fetchall)]
        except EngineError as err:
            log.warning("could not list staging tables beside %s: %s", table, err)
            return
        for name in names:
            prefix = next((p for p in prefixes if name.lower().startswith(p)), None)
            started = _run_started(name[len(prefix) :]) if prefix is not None else None
            if started is None or time.time() - started < _STAGING_KEPT_S:
                continue
            with contextlib.suppress(EngineError):
                self.execute(f"DROP TABLE IF EXISTS {_quoted_table((*parts[:-1], name))}")

    def check_can_write(self, table: str) -> None:
        """Unity Catalog lets a user who may read a table without MODIFY on it run every call,
        then refuses the write. A DELETE that matches nothing needs MODIFY and changes nothing
        (Delta records no empty commit); only its refusal stops the run, any other failure is
        left to the write."""
        try:
            self.execute(f"DELETE FROM {quoting.table(table)} WHERE false")
        except EngineError as e:
            if _INSUFFICIENT_PERMISSIONS not in str(e):
                log.debug("the write permission probe of %s failed: %s", table, e)
                return
            raise ConfigError(
                f"cannot write the output table {table}: {error_line(e)}; nothing was sent. "
                "Writing it needs MODIFY on it (and USE CATALOG, USE SCHEMA): "
                f"GRANT MODIFY ON TABLE {quoting.table(table)} TO <you>"
            ) from None

    def ai_query_missing(self) -> str | None:
        """ai_query is not available on SQL Classic warehouses (its reference, Requirements): the
        warehouses API says which this is. None when it cannot tell (no permission to read the
        warehouse): the statement then meets whatever Databricks says."""
        warehouse = warehouse_id(self.settings)
        if warehouse is None:
            return None
        self.connection()  # an unreachable warehouse fails here, at once, as it would anyway
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.errors.base import DatabricksError

        try:
            info = WorkspaceClient(config=self._sdk().config).warehouses.get(warehouse)
        except DatabricksError as err:
            log.info("could not read warehouse %s: %s", warehouse, error_line(err))
            return None
        kind = info.warehouse_type.value if info.warehouse_type is not None else None
        if kind == "CLASSIC":
            return f"ai_query is not available on SQL Classic warehouses (warehouse {warehouse})"
        return None

    def read_table(self, table: str, limit: int | None = None) -> pa.Table:
        suffix = f" LIMIT {int(limit)}" if limit is not None else ""
        with self._statement(f"SELECT * FROM {quoting.table(table)}{suffix}", None) as cursor:
            self._guard(cursor.get_async_execution_result)
            result: pa.Table = self._guard(cursor.fetchall_arrow)
        return result

    def close(self) -> None:
        self._submitter.shutdown(wait=True)
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                connection.close()

    # -- connecting -----------------------------------------------------------------------------

    def connection(self) -> Connection:
        """The open warehouse session (opened on first use)."""
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def _connect(self) -> Connection:
        from agentbatch.version import __version__

        sql = _connector()
        http_path(self.settings)  # no warehouse given: say so before reaching the workspace
        credentials = self._sdk()
        address = warehouse_address(self.settings, credentials.host)
        options: dict[str, Any] = {
            "server_hostname": address.hostname,
            "http_path": address.http_path,
            "credentials_provider": credentials.provider,
            "catalog": self.catalog,
            "schema": self.schema,
            "query_tags": self.query_tags,
            "user_agent_entry": f"agentbatch/{__version__}",
            # Telemetry and feature flags are fetched over https from the workspace host.
            "enable_telemetry": bool(self.settings.get("telemetry", address.scheme == "https")),
        }
        if address.scheme != "https":
            options["_connection_uri"] = address.uri
        elif address.port != 443:
            options["_port"] = address.port
        ca_file = self.settings.get("tls_ca_file")
        if ca_file:
            # A private CA (a proxy, a test server): the connector's own TLS option.
            options["_tls_trusted_ca_file"] = str(ca_file)
        log.info("connecting to %s (%s auth)", address.uri, credentials.auth_type)
        try:
            with said_if_slow(
                f"databricks-sql: opening a session on {address.uri}",
                "the connector retries for up to 15 min a host that does not answer or a "
                "warehouse that is starting: check the target's host and warehouse, and the "
                "network",
            ):
                connection: Connection = sql.connect(**options)
        except sql.exc.Error as err:
            raise ConfigError(
                f"databricks-sql: could not open a session on {address.uri}: {error_line(err)}"
            ) from None
        return connection

    def _sdk(self) -> Credentials:
        if self._credentials is None:
            self._credentials = sdk_credentials(self.settings)
        return self._credentials

    # -- statements -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _cursor(self, arraysize: int | None = None) -> Iterator[Cursor]:
        connection = self.connection()
        cursor = connection.cursor(arraysize=arraysize) if arraysize else connection.cursor()
        try:
            yield cursor
        finally:
            with contextlib.suppress(Exception):  # closing is best effort
                cursor.close()

    @contextlib.contextmanager
    def _statement(
        self, sql: str, params: Mapping[str, Any] | None, *, arraysize: int | None = None
    ) -> Iterator[Cursor]:
        """Run `sql` asynchronously to completion and hand over its cursor for the results."""
        from databricks.sql.backend.types import CommandState

        with self._cursor(arraysize) as cursor:
            # The future exists before the submission: a Ctrl-C that lands inside `submit` (the
            # first one starts the thread, which may send the statement before `submit` returns)
            # must still learn whether the statement was sent, and cancel it.
            submitted: Future[Any] = Future()

            def send() -> None:
                if not submitted.set_running_or_notify_cancel():
                    return  # interrupted before it started: nothing is sent
                try:
                    submitted.set_result(
                        cursor.execute_async(
                            sql,
                            parameters=dict(params) if params else None,
                            query_tags=self.query_tags,
                        )
                    )
                except BaseException as err:
                    submitted.set_exception(err)

            try:
                self._submitter.submit(send)
                self._guard(submitted.result)
                if cursor.query_id:
                    self.query_ids.append(cursor.query_id)
                state = self._wait(cursor)
            except KeyboardInterrupt:
                self._cancel(cursor, submitted)
                raise
            if state != CommandState.SUCCEEDED:
                raise EngineError(
                    f"databricks-sql: statement {cursor.query_id} ended {state.name.lower()}"
                )
            yield cursor

    def _wait(self, cursor: Cursor) -> Any:
        from databricks.sql.backend.types import CommandState

        delay = self.poll_interval_s
        started = time.monotonic()
        report_at = started + _REPORT_EVERY_S
        while True:
            state = self._guard(cursor.get_query_state)
            if state not in (CommandState.PENDING, CommandState.RUNNING):
                return state
            now = time.monotonic()
            if now >= report_at:
                log.info("statement %s still running (%.0f s)", cursor.query_id, now - started)
                report_at = now + _REPORT_EVERY_S
            time.sleep(delay)
            delay = min(delay * 2, self.poll_max_s)

    def _cancel(self, cursor: Cursor, submitted: Future[Any] | None = None) -> None:
        if submitted is not None and not submitted.cancel():
            # Interrupted while the statement was being sent: let the submission finish to learn
            # what to cancel. (A submission cancelled before it started sent nothing.)
            with contextlib.suppress(BaseException):
                submitted.result(timeout=60)
        log.warning("interrupted: cancelling statement %s on the warehouse", cursor.query_id)
        try:
            cursor.cancel()
        except Exception as err:  # the interrupt matters more than a failed cancel
            log.warning("could not cancel statement %s: %s", cursor.query_id, error_line(err))

    def _guard(self, call: Callable[[], T]) -> T:
        """Connector errors as EngineError with the warehouse's message."""
        sql = _connector()
        try:
            return call()
        except sql.exc.Error as err:
            line = error_line(err)
            # A value the statement's ANSI CAST does not convert: the runner names the job's key
            # whose SQL fails for it, as on the local engine (execution/value_errors.py).
            kind = SourceValueError if _SOURCE_VALUE.search(line) else EngineError
            raise kind(f"databricks-sql: {line}") from None

    def _run_now(self, sql: str, input_stream: io.BytesIO | None = None) -> None:
        """A synchronous statement (staging commands move their bytes inside `execute`)."""
        with self._cursor() as cursor:
            try:
                self._guard(lambda: cursor.execute(sql, input_stream=input_stream))
            except KeyboardInterrupt:
                self._cancel(cursor)
                raise

    # -- staging --------------------------------------------------------------------------------

    def _loader(self, staged: str, key: str) -> JsonParameterLoader | VolumeLoader:
        if self.staging_volume is None:
            return JsonParameterLoader(run=self.execute, max_rows=self.insert_rows, key=key)
        slug = re.sub(r"[^\w-]+", "_", staged).strip("_")
        directory = f"{self.staging_volume}/agentbatch/{slug}/{self.run_id}"
        return VolumeLoader(
            run=self.execute,
            put=self._put,
            remove=self._remove,
            directory=directory,
        )

    def _put(self, path: str, data: bytes) -> None:
        self._run_now(
            f"PUT '__input_stream__' INTO {quoting.literal(path)} OVERWRITE", io.BytesIO(data)
        )

    def _remove(self, path: str) -> None:
        try:
            self._run_now(f"REMOVE {quoting.literal(path)}")
        except EngineError as err:
            log.warning("could not remove staged file %s: %s", path, err)
