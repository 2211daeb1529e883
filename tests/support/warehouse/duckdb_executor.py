"""Run Databricks SQL on DuckDB: the loopback warehouse's default executor.

Statements are parsed as Databricks SQL, table names qualified and each Unity Catalog catalog
mapped to an ATTACHed in-memory DuckDB database (`main` is reserved in DuckDB, so catalog `c`
lives in database `uc_c`), `ai_query(...)` calls rewritten to Python UDFs, `/Volumes/...` reads
pointed at the local volumes directory, then transpiled with sqlglot and run. Each client
session gets its own DuckDB connection, so temporary views live as long as the session.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from duckdb import func, sqltypes
from sqlglot import exp

from agentbatch.agent import lenient_json
from agentbatch.engines.binary_files import listing_names, rewrite_for_duckdb
from agentbatch.engines.merge_rules import (
    DUPLICATE_MATCH_MESSAGE,
    CheckedMerge,
    by_name,
    checked_duckdb_merge,
)

from .ai_query import (
    AiQueryCall,
    AiQueryFunction,
    answer,
    check_custom_model_call,
    check_request,
    error_text,
    files_type_error,
    find_calls,
)
from .ansi_casts import FRACTIONAL_IDS, STRING_IDS, converted, rewrite_casts
from .ansi_casts import format_error as format_cast_error
from .context import Namespace, StatementContext, current_statement
from .names import (
    check_delta_column_names,
    check_unity_catalog_names,
    qualify_and_map,
    temporary_view_name,
)
from .spark_parser import check_statement
from .staging import volume_file
from .store_assignment import check as check_store_assignment

PREFIX = "uc_"
_UDF = "warehouse_ai_query"
_UDF_OR_ERROR = "warehouse_ai_query_or_error"
_SPARK_JSON = "spark_json_text"  # see _spark_json
_RESULT_STRUCT = pa.struct([("result", pa.string()), ("errorMessage", pa.string())])
_READERS = {"parquet": "read_parquet", "csv": "read_csv_auto", "json": "read_json_auto"}
_DML = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
INVALID_JSON_MAP_KEY_CLASS = "DATATYPE_MISMATCH.INVALID_JSON_MAP_KEY_TYPE"
# raise_error and assert_true fail the statement with this class and SQLSTATE (see _user_errors).
USER_RAISED_CLASS = "USER_RAISED_EXCEPTION"
USER_RAISED_SQLSTATE = "P0001"
# ANSI mode (SQL warehouses): `/`, `%`, `div` by 0 fail the statement (see _ansi_division).
DIVIDE_BY_ZERO_MESSAGE = (
    "[DIVIDE_BY_ZERO] Division by zero. Use `try_divide` to tolerate divisor being 0 and return "
    "NULL instead. SQLSTATE: 22012"
)
# The service's own statements around a rehearsed write (service._rolled_back), not a client's.
_REHEARSAL = frozenset({"BEGIN", "ROLLBACK"})


class StatementCancelled(RuntimeError):
    pass


class _Session:
    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection
        self.lock = threading.Lock()  # one statement at a time, as on a warehouse session
        self.temporary_views: set[str] = set()


class DuckDBExecutor:
    """`Executor` running Databricks SQL on an in-process DuckDB database."""

    # A statement can run in a transaction rolled back (commits.py: a write that will conflict).
    rolls_back = True

    def __init__(
        self,
        *,
        catalogs: Iterable[str] = ("main",),
        ai_query: AiQueryFunction | None = None,
        volumes_dir: Path | None = None,
        ai_query_concurrency: int = 8,
        custom_models: Mapping[str, str] | None = None,
        time_zone: str = "UTC",
    ) -> None:
        # endpoint name -> the type ai_query infers from its signature (see ai_query.py)
        self.custom_models = dict(custom_models or {})
        self._db = duckdb.connect(":memory:")
        # The sessions' TIMEZONE: UTC by default, which an admin may change for a warehouse
        # (docs.databricks.com sql/language-manual/parameters/timezone).
        self._db.execute(f"SET GLOBAL TimeZone = '{time_zone}'")
        self._db_lock = threading.Lock()
        self._ai_query = ai_query
        self.volumes_dir = volumes_dir
        self._pool = ThreadPoolExecutor(ai_query_concurrency, thread_name_prefix="ai-query")
        self._sessions: dict[str, _Session] = {}
        self._statements: dict[str, StatementContext | None] = {}
        self._interrupting = threading.Lock()
        for catalog in catalogs:
            self.create_catalog(catalog)
        self._register_udfs()

    # ---- setup ----------------------------------------------------------------------------

    def create_catalog(self, name: str) -> None:
        """A Unity Catalog catalog with its `default` schema."""
        with self._db_lock:
            self._db.execute(f"ATTACH ':memory:' AS \"{PREFIX}{name}\"")
            self._db.execute(f'CREATE SCHEMA IF NOT EXISTS "{PREFIX}{name}"."default"')

    def _register_udfs(self) -> None:
        text = sqltypes.VARCHAR
        self._db.create_function(
            _SPARK_JSON, _spark_json, [text], text, null_handling=func.FunctionNullHandling.SPECIAL
        )
        params: list[Any] = [text, text, text, text, text, sqltypes.BLOB]
        for name, or_error in ((_UDF, False), (_UDF_OR_ERROR, True)):
            result_type = (
                duckdb.struct_type({"result": text, "errorMessage": text}) if or_error else text
            )
            self._db.create_function(
                name,
                self._udf(or_error),
                params,
                result_type,
                type=func.PythonUDFType.ARROW,
                null_handling=func.FunctionNullHandling.SPECIAL,
                side_effects=True,
            )

    def _udf(self, or_error: bool) -> Any:
        def run(
            token: pa.ChunkedArray,
            endpoint: pa.ChunkedArray,
            request: pa.ChunkedArray,
            model_parameters: pa.ChunkedArray,
            response_format: pa.ChunkedArray,
            files: pa.ChunkedArray,
        ) -> pa.Array:
            tokens = token.to_pylist()
            context = self._statements.get(tokens[0]) if tokens else None
            rows = zip(
                endpoint.to_pylist(),
                request.to_pylist(),
                model_parameters.to_pylist(),
                response_format.to_pylist(),
                files.to_pylist(),
                strict=True,
            )
            outcomes = list(self._pool.map(lambda row: self._answer_row(context, *row), rows))
            if or_error:
                return pa.array(
                    [{"result": r, "errorMessage": e} for r, e in outcomes], _RESULT_STRUCT
                )
            for _, failure in outcomes:
                if failure is not None:
                    raise RuntimeError(f"ai_query failed: {failure}")
            return pa.array([r for r, _ in outcomes], pa.string())

        return run

    def _answer_row(
        self,
        context: StatementContext | None,
        endpoint: str | None,
        request_json: str | None,
        model_parameters_json: str | None,
        response_format: str | None,
        files: bytes | None = None,
    ) -> tuple[str | None, str | None]:
        if context is not None and context.cancelled.is_set():
            raise StatementCancelled("statement cancelled")
        assert self._ai_query is not None
        request = json.loads(request_json) if request_json is not None else None
        check_request(endpoint, request, self.custom_models)
        try:
            params = json.loads(model_parameters_json) if model_parameters_json else None
            found = answer(self._ai_query, endpoint, request, params, response_format, files)
            return found, None
        except Exception as failure:
            return None, error_text(failure)

    # ---- executing ------------------------------------------------------------------------

    def _interrupt_until_done(self, session: Any, token: str) -> None:
        """Interrupt the statement until it ends: a cancel landing between the check above and
        DuckDB starting the query would otherwise interrupt nothing, and the query run on."""

        def keep_interrupting() -> None:
            while True:
                with self._interrupting:  # never the session's next statement
                    if token not in self._statements:
                        return
                    session.connection.interrupt()
                time.sleep(0.02)

        threading.Thread(target=keep_interrupting, daemon=True).start()

    def __call__(self, sql: str, params: Mapping[str, Any]) -> pa.Table | None:
        context = current_statement()
        namespace = context.namespace if context is not None else Namespace()
        session = self._session(context.session_id if context is not None else "")
        token = uuid.uuid4().hex
        with session.lock:
            tree = self._translate(sql, namespace, session, token)
            bound = _parameters(tree, params)
            duck_sql = tree.sql(dialect="duckdb")
            self._statements[token] = context
            try:
                if context is not None:
                    context.on_cancel(lambda: self._interrupt_until_done(session, token))
                    if context.cancelled.is_set():
                        raise StatementCancelled("statement cancelled")
                checked = checked_duckdb_merge(tree) if isinstance(tree, exp.Merge) else None
                if checked is not None:
                    table = _run_checked_merge(session.connection, checked, bound)
                else:
                    tree = _check_write_types(session.connection, tree, bound)
                    duck_sql = tree.sql(dialect="duckdb")  # with a write's ANSI casts
                    relation = session.connection.sql(duck_sql, params=bound)
                    table = relation.to_arrow_table() if relation is not None else None
            except duckdb.Error as error:
                raise RuntimeError(_error_message(str(error))) from None
            finally:
                with self._interrupting:
                    self._statements.pop(token, None)
            view = temporary_view_name(tree)
            if view is not None:
                session.temporary_views.add(view.lower())
        dml = isinstance(tree, (*_DML, exp.Create))
        if table is not None and dml and table.column_names == ["Count"]:
            table = table.rename_columns(["num_affected_rows"])
        return table

    def _session(self, session_id: str) -> _Session:
        with self._db_lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = _Session(self._db.cursor())
                self._sessions[session_id] = session
            return session

    def end_session(self, session_id: str) -> None:
        with self._db_lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            with session.lock:
                session.connection.close()

    def _translate(
        self, sql: str, namespace: Namespace, session: _Session, token: str
    ) -> exp.Expression:
        if sql not in _REHEARSAL:
            check_statement(sql)  # sqlglot reads much that Databricks' parser refuses
        try:
            trees = [t for t in sqlglot.parse(sql, read="databricks") if t is not None]
        except sqlglot.errors.ParseError as error:
            raise ValueError(f"[PARSE_SYNTAX_ERROR] {_plain(str(error))}") from None
        if len(trees) != 1:
            raise ValueError(f"expected one SQL statement, got {len(trees)}")
        tree = trees[0]
        assert isinstance(tree, exp.Expression)
        check_unity_catalog_names(tree)
        check_delta_column_names(tree)
        self._read_volumes(tree, session.connection)
        tree = qualify_and_map(
            tree,
            namespace,
            lambda catalog, schema: (f"{PREFIX}{catalog}", schema),
            unqualified=session.temporary_views | listing_names(tree),
        )
        rewrite_casts(tree)  # before ai_query's own casts (its returnType) are added
        for call in find_calls(tree):
            check_custom_model_call(call, self.custom_models)
            call.node.replace(self._ai_query_sql(call, token))
        _from_json_casts(tree)
        _char_varchar_checks(tree)
        _json_functions(tree)
        _user_errors(tree)
        _ansi_division(tree)
        _unordered_limits(tree)
        return tree

    def _ai_query_sql(self, call: AiQueryCall, token: str) -> exp.Expression:
        if self._ai_query is None:
            raise ValueError("ai_query is not available: this warehouse has no agent configured")
        node = exp.Anonymous(
            this=_UDF if call.fail_on_error else _UDF_OR_ERROR,
            expressions=[
                exp.Literal.string(token),
                call.endpoint,
                exp.Anonymous(this="to_json", expressions=[call.request]),
                exp.Anonymous(this="to_json", expressions=[call.model_parameters])
                if call.model_parameters is not None
                else exp.null(),
                call.response_format if call.response_format is not None else exp.null(),
                _files_arg(call.files),
            ],
        )
        return_type = call.return_type
        name = call.endpoint.this if isinstance(call.endpoint, exp.Literal) else None
        if return_type is None and name in self.custom_models:
            return_type = self.custom_models[name]  # inferred from the model signature
        if return_type is None or return_type.strip().upper() == "STRING":
            return node
        duck_type = exp.DataType.build(return_type, dialect="databricks").sql("duckdb")
        if call.fail_on_error:
            return sqlglot.parse_one(
                f"CAST(CAST(__call AS JSON) AS {duck_type})", read="duckdb"
            ).transform(
                lambda n: node.copy() if isinstance(n, exp.Column) and n.name == "__call" else n
            )
        # Evaluate the call once, then parse its `result` into the declared type.
        template = sqlglot.parse_one(
            "LIST_TRANSFORM([__call], s -> {'result': TRY_CAST(CAST(s.result AS JSON) AS "
            f"{duck_type}), 'errorMessage': s.errorMessage}})[1]",
            read="duckdb",
        )
        return template.transform(
            lambda n: node.copy() if isinstance(n, exp.Column) and n.name == "__call" else n
        )

    def _read_volumes(self, tree: exp.Expression, connection: Any = None) -> None:
        """`read_files('/Volumes/...', format => 'parquet')` and parquet.`/Volumes/...`;
        `format => 'binaryFile'` lists a folder as Databricks does (agentbatch.engines.binary_files)."""
        if self.volumes_dir is not None:
            rewrite_for_duckdb(tree, {"/Volumes": self.volumes_dir}, connection)
        for fn in list(tree.find_all(exp.Anonymous)):
            if str(fn.this).lower() != "read_files":
                continue
            path = fn.expressions[0] if fn.expressions else None
            if not (isinstance(path, exp.Literal) and path.is_string):
                raise ValueError("read_files: the path must be a string literal")
            fmt = "parquet"
            for arg in fn.expressions[1:]:
                if isinstance(arg, exp.Kwarg) and arg.this.name.lower() == "format":
                    fmt = arg.expression.name.lower()
            fn.replace(self._reader(fmt, path.this))
        for table in list(tree.find_all(exp.Table)):
            db = table.args.get("db")
            if (
                db is not None
                and db.name.lower() in _READERS
                and table.name.startswith("/Volumes/")
            ):
                table.set("this", self._reader(db.name.lower(), table.name))
                table.set("db", None)

    def _reader(self, fmt: str, volume_path: str) -> exp.Expression:
        if self.volumes_dir is None:
            raise ValueError("this warehouse has no volumes directory")
        if fmt not in _READERS:
            raise ValueError(f"read_files: unsupported format {fmt!r}")
        local = volume_file(self.volumes_dir, volume_path)
        pattern = str(local / "**" / f"*.{fmt}") if local.is_dir() else str(local)
        return exp.Anonymous(this=_READERS[fmt], expressions=[exp.Literal.string(pattern)])

    # ---- metadata -------------------------------------------------------------------------

    def metadata(self, kind: str, filters: Mapping[str, str | None]) -> pa.Table:
        queries = {
            "catalogs": (
                "SELECT substr(database_name, {n}) AS TABLE_CAT FROM duckdb_databases() "
                "WHERE database_name LIKE 'uc\\_%' ESCAPE '\\' ORDER BY 1"
            ),
            "schemas": (
                "SELECT schema_name AS TABLE_SCHEM, substr(database_name, {n}) AS TABLE_CATALOG "
                "FROM duckdb_schemas() WHERE database_name LIKE 'uc\\_%' ESCAPE '\\' "
                "AND NOT internal AND substr(database_name, {n}) LIKE $catalog "
                "AND schema_name LIKE $schema ORDER BY 2, 1"
            ),
            "tables": (
                "SELECT substr(database_name, {n}) AS TABLE_CAT, schema_name AS TABLE_SCHEM, "
                "table_name AS TABLE_NAME, 'TABLE' AS TABLE_TYPE, NULL::VARCHAR AS REMARKS "
                "FROM duckdb_tables() WHERE database_name LIKE 'uc\\_%' ESCAPE '\\' "
                "AND substr(database_name, {n}) LIKE $catalog AND schema_name LIKE $schema "
                "AND table_name LIKE $table "
                "UNION ALL SELECT substr(database_name, {n}), schema_name, view_name, 'VIEW', NULL "
                "FROM duckdb_views() WHERE NOT internal AND database_name LIKE 'uc\\_%' ESCAPE '\\' "
                "AND substr(database_name, {n}) LIKE $catalog AND schema_name LIKE $schema "
                "AND view_name LIKE $table ORDER BY 1, 2, 3"
            ),
            "columns": (
                "SELECT substr(database_name, {n}) AS TABLE_CAT, schema_name AS TABLE_SCHEM, "
                "table_name AS TABLE_NAME, column_name AS COLUMN_NAME, data_type AS TYPE_NAME, "
                "column_index AS ORDINAL_POSITION, CASE WHEN is_nullable THEN 'YES' ELSE 'NO' END "
                "AS IS_NULLABLE FROM duckdb_columns() WHERE database_name LIKE 'uc\\_%' ESCAPE '\\' "
                "AND substr(database_name, {n}) LIKE $catalog AND schema_name LIKE $schema "
                "AND table_name LIKE $table AND column_name LIKE $column ORDER BY 1, 2, 3, 6"
            ),
        }
        if kind not in queries:
            raise ValueError(f"unknown metadata kind {kind!r}")
        query = queries[kind].replace("{n}", str(len(PREFIX) + 1))
        wanted = {k: (filters.get(k) or "%") for k in ("catalog", "schema", "table", "column")}
        bound = {k: v for k, v in wanted.items() if f"${k}" in query}
        with self._db_lock:
            cursor = self._db.cursor()
        try:
            table = cursor.sql(query, params=bound or None).to_arrow_table()
        finally:
            cursor.close()
        if kind == "columns":
            types = [
                exp.DataType.build(t, dialect="duckdb").sql("databricks")
                for t in table.column("TYPE_NAME").to_pylist()
            ]
            table = table.set_column(4, "TYPE_NAME", pa.array(types, pa.string()))
        return table

    def __enter__(self) -> DuckDBExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._db_lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            with session.lock:
                session.connection.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._db.close()


def _files_arg(files: exp.Expression | None) -> exp.Expression:
    """The `files` bytes; a value that is not BINARY fails the statement, as analysis does."""
    blob = exp.DataType.build("BLOB", dialect="duckdb")
    if files is None:
        return exp.Cast(this=exp.null(), to=blob)
    return sqlglot.parse_one(
        "CASE WHEN typeof(__files) IN ('BLOB', 'NULL') THEN CAST(__files AS BLOB) "
        f"ELSE error({exp.Literal.string(files_type_error(files.sql('databricks'))).sql('duckdb')}) END",
        read="duckdb",
    ).transform(lambda n: files.copy() if isinstance(n, exp.Column) and n.name == "__files" else n)


def _unordered_limits(tree: exp.Expression) -> None:
    """Databricks: LIMIT without ORDER BY is not deterministic (the LIMIT clause reference); DuckDB
    returns small tables in order, so a query that relied on it could not fail here. Such a
    LIMIT (over more than one row) takes random rows instead."""
    for select in list(tree.find_all(exp.Select)):
        limit = select.args.get("limit")
        if limit is None or select.args.get("order") is not None:
            continue
        count = limit.expression
        if isinstance(count, exp.Literal) and count.is_int and int(count.this) <= 1:
            continue  # LIMIT 0 or 1 over a query of one row or one value: nothing to order
        select.order_by(exp.Anonymous(this="random", expressions=[]), copy=False)


def _from_json_casts(tree: exp.Expression) -> None:
    """`from_json(x, '<DDL type>')` -> a lenient JSON cast (bad or mismatched JSON gives NULLs,
    as Databricks' default PERMISSIVE mode does); sqlglot leaves it untranslated for DuckDB.

    Databricks refuses, at analysis, a schema with a MAP whose key is not STRING, at any depth
    (Spark's ExprUtils.checkJsonSchema: DATATYPE_MISMATCH.INVALID_JSON_MAP_KEY_TYPE); DuckDB
    would cast the keys, so refuse it here too."""
    for node, value, schema in _from_json_calls(tree):
        if not (isinstance(schema, exp.Literal) and schema.is_string):
            raise ValueError("from_json: the schema must be a string literal")
        target = exp.DataType.build(schema.this, dialect="databricks")
        _check_json_map_keys(node, target)
        as_json = exp.TryCast(this=value, to=exp.DataType.build("JSON"))
        node.replace(exp.TryCast(this=as_json, to=target))


def _from_json_calls(
    tree: exp.Expression,
) -> list[tuple[exp.Expression, exp.Expression, exp.Expression]]:
    """Each `from_json(value, schema)`: (call, value, schema). sqlglot parses it as FromJson
    from the version after the floor (30.14), as an anonymous function before."""
    from_json = getattr(exp, "FromJson", None)
    calls = []
    for node in tree.find_all(exp.Func):
        if from_json is not None and isinstance(node, from_json):
            calls.append((node, node.this, node.expression))
        elif (
            isinstance(node, exp.Anonymous)
            and node.name.lower() == "from_json"
            and len(node.expressions) >= 2
        ):
            calls.append((node, node.expressions[0], node.expressions[1]))
    return calls


# Delta keeps a CHAR(n) / VARCHAR(n) column's length as a CHECK constraint every write checks
# (delta-io/delta constraints/CharVarcharConstraint.scala; a value over it fails the write with
# DELTA_EXCEED_CHAR_VARCHAR_LIMIT, SQLSTATE 22001). DuckDB keeps no length: a CHECK here.
EXCEED_CHAR_VARCHAR_CLASS = "DELTA_EXCEED_CHAR_VARCHAR_LIMIT"
_LENGTH_CHECK = re.compile(
    r"CHECK constraint failed on table \S+ with expression CHECK\(\(length\((.+?)\) <= (\d+)\)\)"
)


def _char_varchar_checks(tree: exp.Expression) -> None:
    """`CREATE TABLE (c VARCHAR(n))`: a CHECK on the length of `c`, as Delta's constraint. Only
    top-level columns; CHAR(n)'s padding (on read) is not reproduced."""
    if not isinstance(tree, exp.Create) or not isinstance(tree.this, exp.Schema):
        return
    for column in tree.this.expressions:
        kind = column.args.get("kind") if isinstance(column, exp.ColumnDef) else None
        if not isinstance(kind, exp.DataType) or not kind.expressions:
            continue
        if kind.this not in (exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR):
            continue
        limit = int(kind.expressions[0].name)
        check = exp.LTE(
            this=exp.Length(this=exp.column(column.this.copy())),
            expression=exp.Literal.number(limit),
        )
        column.append(
            "constraints", exp.ColumnConstraint(kind=exp.CheckColumnConstraint(this=check))
        )


def _check_json_map_keys(node: exp.Expression, schema: exp.DataType) -> None:
    for map_type in schema.find_all(exp.DataType):
        if map_type.this != exp.DataType.Type.MAP or not map_type.expressions:
            continue
        key = map_type.expressions[0]
        if not (isinstance(key, exp.DataType) and key.this == exp.DataType.Type.TEXT):
            raise ValueError(
                f'[{INVALID_JSON_MAP_KEY_CLASS}] Cannot resolve "{node.sql("databricks")}" due to '
                f'data type mismatch: Input schema "{schema.sql("databricks")}" can only contain '
                "STRING as a key type for a MAP. SQLSTATE: 42K09"
            )


def _parameters(tree: exp.Expression, params: Mapping[str, Any]) -> Any:
    """The values DuckDB binds to the statement's parameters: by name (`:name`, `$name` in
    DuckDB), or by position (`?`) as a list. A MERGE's positional parameters are named `p1`, ...
    instead, as it runs in steps (`_run_checked_merge`) that each bind only their own."""
    placeholders = list(tree.find_all(exp.Placeholder, bfs=False))  # in the order written
    if not placeholders:
        return None
    if all(p.this is None for p in placeholders):  # `?`: the connector numbers them from 1
        values = [params[str(i)] for i in range(1, len(placeholders) + 1)]
        if not isinstance(tree, exp.Merge):
            return values
        for i, placeholder in enumerate(placeholders, 1):
            placeholder.set("this", f"p{i}")
        return {f"p{i}": value for i, value in enumerate(values, 1)}
    names = dict.fromkeys(str(p.this) for p in placeholders)
    return {n: params[n] for n in names if n in params}


def _step_parameters(sql: str, bound: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Of `bound`, the parameters `sql` (one step of a MERGE) uses: DuckDB refuses others."""
    if not bound:
        return None
    used = {p.this for p in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Placeholder)}
    return {name: value for name, value in bound.items() if name in used} or None


def _run_checked_merge(
    connection: duckdb.DuckDBPyConnection,
    checked: CheckedMerge,
    bound: Mapping[str, Any] | None = None,
) -> pa.Table | None:
    """Delta refuses a MERGE where several source rows match one target row; so does this.
    Each step binds the statement's parameters it uses (in the source, the ON condition, a
    WHEN clause)."""
    connection.execute(checked.materialize, _step_parameters(checked.materialize, bound))
    try:
        find = checked.find_duplicate
        if connection.execute(find, _step_parameters(find, bound)).fetchall():
            raise ValueError(DUPLICATE_MATCH_MESSAGE)
        target, source = (
            [c[0] for c in connection.execute(query).description or []]
            for query in (checked.target_columns, checked.source_columns)
        )
        expanded = by_name(checked.tree, target, source)
        _check_merge_types(connection, expanded, bound)  # and adds Delta's ANSI casts
        merge = expanded.sql("duckdb")
        relation = connection.sql(merge, params=_step_parameters(merge, bound))
        # DuckDB before 2.0 (the newest for Python 3.10) runs a write at once and gives None.
        return relation.to_arrow_table() if relation is not None else None
    finally:
        connection.execute(checked.drop)


def _relation(connection: duckdb.DuckDBPyConnection, sql: str, bound: Any) -> Any:
    """`sql` (a query) bound, not run: its column names and types, read without evaluating it
    (it may call an agent)."""
    params = bound if isinstance(bound, list) else _step_parameters(sql, bound)
    return connection.sql(sql, params=params)


def _plain_table(table: exp.Expression) -> str:
    plain = table.copy()
    plain.set("alias", None)
    return exp.select("*").from_(plain).sql("duckdb")


def _check_write_types(
    connection: duckdb.DuckDBPyConnection, tree: exp.Expression, bound: Any
) -> exp.Expression:
    """Databricks' store assignment for a write into an existing table (store_assignment.py):
    INSERT [OVERWRITE] ... SELECT / VALUES, UPDATE, and MERGE (see `_check_merge_types`). The
    statement to run: with Spark's ANSI cast where DuckDB's would convert otherwise
    (ansi_casts.py: a DOUBLE or a STRING into an integral column)."""
    if isinstance(tree, exp.Merge):
        target = tree.this
        using = tree.args.get("using")
        if not isinstance(target, exp.Table) or using is None:
            return tree
        source_sql = (
            using.this.sql("duckdb") if isinstance(using, exp.Subquery) else _plain_table(using)
        )
        try:
            target_columns = connection.sql(_plain_table(target)).columns
            source_columns = _relation(connection, source_sql, bound).columns
            expanded = by_name(tree, target_columns, source_columns)
        except (duckdb.Error, ValueError):
            return tree  # the statement itself reports it
        if _check_merge_types(connection, expanded, bound):
            return expanded
        return tree
    if isinstance(tree, exp.Update) and isinstance(tree.this, exp.Table):
        pairs = [(e.this.name, e.expression) for e in tree.expressions if isinstance(e, exp.EQ)]
        _check_assignments(connection, tree.this, None, pairs, bound)
        return tree
    if not isinstance(tree, exp.Insert) or tree.expression is None:
        return tree
    target, names = tree.this, None
    if isinstance(target, exp.Schema):
        target, names = target.this, [c.name for c in target.expressions]
    if not isinstance(target, exp.Table):
        return tree
    try:
        table = connection.sql(_plain_table(target))
        columns = dict(zip(table.columns, table.types, strict=True))
        written = _relation(connection, tree.expression.sql("duckdb"), bound)
    except duckdb.Error:
        return tree  # the statement itself reports it
    names = names if names is not None else list(columns)
    if len(names) != len(written.types):
        return tree
    by_lower = {name.lower(): kind for name, kind in columns.items()}
    check_store_assignment(
        (label, kind, by_lower[name.lower()])
        for label, kind, name in zip(written.columns, written.types, names, strict=True)
        if name.lower() in by_lower
    )
    targets = [by_lower.get(name.lower()) for name in names]
    if not any(
        t is not None and _converts_otherwise(k, t)
        for k, t in zip(written.types, targets, strict=True)
    ):
        return tree
    # INSERT INTO t (...) SELECT <each column, cast as Delta casts it> FROM (<the query>)
    aliases = [f"__written_{i}" for i in range(len(names))]
    values: list[exp.Expression] = []
    for alias, name, kind, column_type in zip(aliases, names, written.types, targets, strict=True):
        value: exp.Expression = exp.column(alias, "__written")
        if column_type is not None and _converts_otherwise(kind, column_type):
            value = converted(value, _data_type(column_type), column=name, write="insert")
        values.append(value)
    source = exp.Subquery(
        this=tree.expression.copy(),
        alias=exp.TableAlias(
            this=exp.to_identifier("__written"), columns=[exp.to_identifier(a) for a in aliases]
        ),
    )
    tree.set("expression", exp.select(*values).from_(source))
    return tree


def _converts_otherwise(source: sqltypes.DuckDBPyType, target: sqltypes.DuckDBPyType) -> bool:
    """DuckDB's cast of `source` into a `target` column differs from Spark's ANSI one: a DOUBLE,
    FLOAT, DECIMAL or STRING into an integral column (ansi_casts.py)."""
    if target.id not in ("tinyint", "smallint", "integer", "bigint"):
        return False
    return source.id in FRACTIONAL_IDS or source.id in STRING_IDS


def _data_type(t: sqltypes.DuckDBPyType) -> exp.DataType:
    return exp.DataType.build(str(t), dialect="duckdb")


def _check_merge_types(connection: duckdb.DuckDBPyConnection, tree: exp.Merge, bound: Any) -> bool:
    """A MERGE's `UPDATE SET` and `INSERT` values (its stars written out by name) against the
    target's columns, as Delta casts them (store_assignment.py); True when a value was given
    Spark's ANSI cast in `tree` (`_check_assignments`)."""
    whens = tree.args.get("whens")
    pairs: list[tuple[str, exp.Expression]] = []
    for when in whens.expressions if isinstance(whens, exp.Whens) else []:
        then = when.args.get("then")
        if isinstance(then, exp.Update):
            pairs += [
                (e.this.name, e.expression) for e in then.expressions if isinstance(e, exp.EQ)
            ]
        elif isinstance(then, exp.Insert) and isinstance(then.expression, exp.Tuple):
            names = then.this.expressions if isinstance(then.this, (exp.Tuple, exp.Schema)) else []
            pairs += [(c.name, v) for c, v in zip(names, then.expression.expressions, strict=False)]
    return _check_assignments(connection, tree.this, tree.args.get("using"), pairs, bound)


def _check_assignments(
    connection: duckdb.DuckDBPyConnection,
    target: exp.Expression,
    source: exp.Expression | None,
    pairs: list[tuple[str, exp.Expression]],
    bound: Any,
) -> bool:
    """Refuse what Delta's MERGE / UPDATE refuses; give each value (a node of the statement) that
    DuckDB would convert otherwise Spark's ANSI cast (True when one was)."""
    if not pairs or not isinstance(target, exp.Table):
        return False
    query = exp.select(*(value.copy() for _, value in pairs)).from_(target.copy())
    if source is not None:
        query = query.join(source.copy(), join_type="cross")
    sql = query.sql("duckdb")
    try:
        columns = connection.sql(_plain_table(target))
        types = dict(zip((c.lower() for c in columns.columns), columns.types, strict=True))
        written = _relation(connection, sql, bound).types
    except duckdb.Error:
        return False  # the statement itself reports it
    check_store_assignment(
        (
            (value.sql("databricks"), kind, types[name.lower()])
            for (name, value), kind in zip(pairs, written, strict=True)
            if name.lower() in types
        ),
        insert=False,
    )
    changed = False
    for (name, value), kind in zip(pairs, written, strict=True):
        column_type = types.get(name.lower())
        if column_type is not None and _converts_otherwise(kind, column_type):
            new = converted(value.copy(), _data_type(column_type), column=name, write="update")
            value.replace(new)
            changed = True
    return changed


def _spark_json(text: str | None) -> str | None:
    """`text` as the JSON Databricks' readers see in it (single quotes, raw control characters,
    the first of repeated keys, what follows the first value ignored), or NULL for none."""
    if text is None:
        return None
    try:
        return json.dumps(lenient_json.loads(text))
    except (ValueError, RecursionError):
        return None


def _json_functions(tree: exp.Expression) -> None:
    """Databricks' JSON readers return NULL for text that is not JSON (`get_json_object`), or not
    a JSON object (`json_object_keys`); DuckDB's raise, so guard them. They read JSON as Jackson
    does with single quotes and raw control characters allowed (`_spark_json`). `arrays_overlap`
    is DuckDB's `list_has_any` with Databricks' NULL rule (`_arrays_overlap`)."""
    for node in list(tree.find_all(exp.JSONExtractScalar, exp.JSONKeys)):
        node.set("this", exp.Anonymous(this=_SPARK_JSON, expressions=[node.this.copy()]))
    for node in list(tree.find_all(exp.JSONExtractScalar)):
        valid = exp.Anonymous(this="json_valid", expressions=[node.this.copy()])
        node.replace(exp.Case(ifs=[exp.If(this=valid, true=node.copy())]))
    for node in list(tree.find_all(exp.JSONKeys)):
        text = node.this
        valid = exp.Anonymous(this="json_valid", expressions=[text.copy()])
        is_object = exp.EQ(
            this=exp.Anonymous(this="json_type", expressions=[text.copy()]),
            expression=exp.Literal.string("OBJECT"),
        )
        inner = exp.Case(ifs=[exp.If(this=is_object, true=node.copy())])
        node.replace(exp.Case(ifs=[exp.If(this=valid, true=inner)]))
    for fn in list(tree.find_all(exp.Anonymous)):
        if str(fn.this).lower() == "arrays_overlap":
            fn.replace(_arrays_overlap(fn))


# Databricks' arrays_overlap: "If the arrays have no common non-null element, they are both
# non-empty, and either of them contains a null element, NULL, false otherwise"
# (docs.databricks.com sql/language-manual/functions/arrays_overlap); DuckDB's list_has_any gives
# false there.
_ARRAYS_OVERLAP = (
    "CASE WHEN list_has_any(__a, __b) THEN true "
    "WHEN len(__a) > 0 AND len(__b) > 0 AND (list_count(__a) < len(__a) "
    "OR list_count(__b) < len(__b)) THEN NULL "
    "WHEN __a IS NOT NULL AND __b IS NOT NULL THEN false END"
)


def _arrays_overlap(fn: exp.Anonymous) -> exp.Expression:
    """`arrays_overlap(a, b)` with Databricks' NULL rule; the arguments are repeated, so one holding
    a function call (evaluated once per mention) keeps DuckDB's `list_has_any`."""
    args = list(fn.expressions)
    if len(args) != 2 or any(a.find(exp.Anonymous, exp.Subquery) for a in args):
        return exp.Anonymous(this="list_has_any", expressions=args)
    first, second = args
    rewritten: exp.Expression = sqlglot.parse_one(_ARRAYS_OVERLAP, read="duckdb").transform(
        lambda n: (
            (first if n.name == "__a" else second).copy()
            if isinstance(n, exp.Column) and n.name in ("__a", "__b")
            else n
        )
    )
    return rewritten


def _user_errors(tree: exp.Expression) -> None:
    """`raise_error(expr)` fails the statement with `expr` as its message, error class
    USER_RAISED_EXCEPTION and SQLSTATE P0001 (`[USER_RAISED_EXCEPTION] <expr> SQLSTATE: P0001`);
    `assert_true(condition[, message])` does when the condition is not true (false or NULL),
    with `'<condition>' is not true!` by default; each is NULL otherwise. Both are evaluated only
    where they are reached (the branch of a CASE). DuckDB's `error(message)` raises an Invalid
    Input Error with the message, which `_error_message` gives back as Databricks words it.
    Sources: docs.databricks.com sql/language-manual/functions/raise_error, .../assert_true."""
    for fn in list(tree.find_all(exp.Anonymous)):
        name = str(fn.this).lower()
        if name not in ("raise_error", "assert_true"):
            continue
        args = list(fn.expressions)
        if name == "raise_error":
            if len(args) != 1:
                raise ValueError(
                    "[WRONG_NUM_ARGS.WITHOUT_SUGGESTION] The `raise_error` requires 1 "
                    f"parameters but the actual number is {len(args)}."
                )
            fn.replace(_user_error(args[0]))
            continue
        if len(args) not in (1, 2):
            raise ValueError(
                "[WRONG_NUM_ARGS.WITHOUT_SUGGESTION] The `assert_true` requires [1, 2] "
                f"parameters but the actual number is {len(args)}."
            )
        condition = args[0]
        message = (
            args[1]
            if len(args) == 2
            else exp.Literal.string(f"'{condition.sql('databricks')}' is not true!")
        )
        fn.replace(
            exp.Case(
                ifs=[exp.If(this=condition.copy(), true=exp.null())], default=_user_error(message)
            )
        )


def _ansi_division(tree: exp.Expression) -> None:
    """Databricks SQL runs in ANSI mode: `a / b`, `a % b` (`mod`) and `a div b` with `b` = 0 fail
    the statement with DIVIDE_BY_ZERO, SQLSTATE 22012 ("If the divisor is 0, the operator returns
    a DIVIDE_BY_ZERO error. Use try_divide to return NULL": docs.databricks.com
    sql/language-manual/functions/slashsign, .../percentsign, .../div); DuckDB gives NULL or
    infinity. `try_divide` (sqlglot's SafeDivide) stays NULL. A divisor holding a function call
    is left as it is (it would be evaluated twice, and may call an agent)."""
    for node in list(tree.find_all(exp.Div, exp.Mod, exp.IntDiv)):
        if isinstance(node, exp.Div) and node.args.get("safe"):
            continue
        divisor = node.expression
        if divisor is None or divisor.find(exp.Anonymous, exp.Subquery) is not None:
            continue
        zero = exp.EQ(this=divisor.copy(), expression=exp.Literal.number(0))
        raise_it = exp.Anonymous(
            this="error", expressions=[exp.Literal.string(DIVIDE_BY_ZERO_MESSAGE)]
        )
        node.replace(
            exp.Case(ifs=[exp.If(this=zero, true=raise_it)], default=exp.paren(node.copy()))
        )


def _user_error(message: exp.Expression) -> exp.Expression:
    """DuckDB's `error(...)` with the message Databricks gives a user-raised error."""
    template = sqlglot.parse_one(
        f"error('[{USER_RAISED_CLASS}] ' || coalesce(CAST(__message AS VARCHAR), 'null') "
        f"|| ' SQLSTATE: {USER_RAISED_SQLSTATE}')",
        read="duckdb",
    )
    return template.transform(
        lambda n: message.copy() if isinstance(n, exp.Column) and n.name == "__message" else n
    )


def _error_message(message: str) -> str:
    """A DuckDB error as the warehouse words it: a user-raised error is its own message (DuckDB
    prefixes `Invalid Input Error: `), kept as written; any other names the client's catalogs."""
    start = message.find(f"[{USER_RAISED_CLASS}] ")
    if start >= 0:
        return message[start:]
    if DIVIDE_BY_ZERO_MESSAGE in message:
        return DIVIDE_BY_ZERO_MESSAGE
    cast_error = format_cast_error(message)
    if cast_error is not None:
        return cast_error
    malformed = _malformed(message)
    if malformed is not None:
        return malformed
    exceeded = _LENGTH_CHECK.search(message)
    if exceeded is not None:  # Delta names the value too; DuckDB's message does not hold it
        column, limit = exceeded[1].strip('"'), exceeded[2]
        return (
            f"[{EXCEED_CHAR_VARCHAR_CLASS}] A value exceeds char/varchar type length limitation. "
            f"Failed check: (({column} IS NULL) OR (length({column}) <= {limit})). SQLSTATE: 22001"
        )
    return _databricks_names(message)


# ANSI mode: a STRING that does not parse as the type it is cast to (by CAST, or by the cast a
# write into a column of that type adds: store_assignment.py) fails the statement with
# CAST_INVALID_INPUT, SQLSTATE 22018 (Spark's error-conditions.json; "Use `try_cast` to tolerate
# malformed input"). DuckDB's own words name its internal type.
_MALFORMED = (
    re.compile(r"Could not convert string (?P<q>['\"])(?P<value>.*?)(?P=q) to (?P<type>[\w(),]+)"),
    re.compile(r'invalid (?P<type>date|timestamp) field format: "(?P<value>.*?)"'),
)
_DUCKDB_TYPE_NAMES = {
    "INT8": "TINYINT",
    "INT16": "SMALLINT",
    "INT32": "INT",
    "INT64": "BIGINT",
    "BOOL": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


def _malformed(message: str) -> str | None:
    for pattern in _MALFORMED:
        found = pattern.search(message)
        if found is not None:
            target = _DUCKDB_TYPE_NAMES.get(found["type"], found["type"])
            value = found["value"].replace("'", "\\'")
            return (
                f"[CAST_INVALID_INPUT] The value '{value}' of the type \"STRING\" cannot be cast to "
                f'"{target}" because it is malformed. Correct the value as per the syntax, or change '
                "its target type. Use `try_cast` to tolerate malformed input and return NULL "
                "instead. SQLSTATE: 22018"
            )
    return None


def _plain(message: str) -> str:
    """sqlglot underlines the offending token with terminal escapes; drop them."""
    return re.sub(r"\x1b\[[0-9;]*m", "", message)


def _databricks_names(message: str) -> str:
    """DuckDB error text with the Unity Catalog catalog names the client used."""
    return re.sub(rf"\b{PREFIX}(\w+)", r"\1", message)
