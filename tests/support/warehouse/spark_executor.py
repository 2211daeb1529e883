"""Run Databricks SQL on a local Spark session: the loopback warehouse's second executor.

Unity Catalog names map to Spark databases (`catalog.schema` -> `catalog__schema`), Delta tables
become Parquet tables (Delta's jars are not available locally, so `MERGE INTO` is not), and
`ai_query(...)` becomes a registered Python UDF that receives Databricks-style named arguments
(`modelParameters => ...`) as keyword arguments. Cancelling a statement interrupts its Spark
jobs by tag. The caller owns the SparkSession, so a test run can share one.
"""

from __future__ import annotations

import sys
import sysconfig
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

from agentbatch.engines.binary_files import rewrite_for_spark
from agentbatch.sql.parsing import printed  # a nested WITH stays nested, as Databricks takes it

from . import ai_query as ai_query_module
from .ai_query import AiQueryCall, AiQueryFunction, check_custom_model_call, find_calls
from .arrow_wire import with_sql_names
from .context import Namespace, current_statement
from .names import (
    check_delta_column_names,
    check_unity_catalog_names,
    qualify_and_map,
    temporary_view_name,
)
from .spark_metadata import spark_tables

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_UDF = "warehouse_ai_query"
_UDF_OR_ERROR = "warehouse_ai_query_or_error"


def spark_database(catalog: str, schema: str) -> str:
    return f"{catalog}__{schema}"


def _plain(value: Any) -> Any:
    """Spark Rows (named_struct values) as dicts, recursively."""
    from pyspark.sql import Row

    if isinstance(value, Row):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _make_udf(fn: AiQueryFunction, or_error: bool, custom_models: frozenset[str]) -> Any:
    answer, error_text = ai_query_module.answer, ai_query_module.error_text
    check_request = ai_query_module.check_request

    files_type_error = ai_query_module.files_type_error

    def _file_bytes(value: Any) -> bytes | None:
        if value is None or isinstance(value, (bytes, bytearray)):
            return bytes(value) if value is not None else None
        raise ValueError(files_type_error(repr(value)[:40]))  # fails the statement

    def run(endpoint: str | None, request: Any, **named: Any) -> Any:
        check_request(endpoint, _plain(request), custom_models)  # fails the statement
        files = _file_bytes(named.get("files"))  # so does a files value that is not BINARY
        try:
            result = answer(
                fn,
                endpoint,
                _plain(request),
                _plain(named.get("modelParameters")),
                named.get("responseFormat"),
                files,
            )
        except Exception as failure:
            if or_error:
                return (None, error_text(failure))
            raise
        return (result, None) if or_error else result

    return run


def _pickle_by_value(*objects: Any) -> None:
    """Ship the test modules' code to Spark's Python workers, which cannot import them."""
    from pyspark import cloudpickle

    site = sysconfig.get_paths()["purelib"]
    for obj in objects:
        module = sys.modules.get(getattr(obj, "__module__", "") or "")
        path = getattr(module, "__file__", None) or ""
        if module is not None and module.__name__ != "__main__" and not path.startswith(site):
            cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]


class SparkExecutor:
    """`Executor` running Databricks SQL on a local SparkSession."""

    def __init__(
        self,
        spark: SparkSession,
        *,
        catalogs: Iterable[str] = ("main",),
        ai_query: AiQueryFunction | None = None,
        custom_models: Mapping[str, str] | None = None,
        volumes_dir: Path | None = None,
    ) -> None:
        self.spark = spark
        # read_files(..., format => 'binaryFile') lists folders under it as Spark's binaryFile.
        self.volumes_dir = volumes_dir
        # endpoint name -> the type ai_query infers from its signature (see ai_query.py)
        self.custom_models = dict(custom_models or {})
        # SQL warehouses and serverless compute run in ANSI mode: an invalid CAST raises.
        # https://docs.databricks.com/aws/en/compute/serverless/limitations
        spark.conf.set("spark.sql.ansi.enabled", "true")
        self._ai_query = ai_query
        self._temporary_views: set[str] = set()
        self._lock = threading.Lock()
        for catalog in catalogs:
            spark.sql(f"CREATE DATABASE IF NOT EXISTS `{spark_database(catalog, 'default')}`")
        if ai_query is not None:
            self._register_udfs(ai_query)

    def _register_udfs(self, fn: AiQueryFunction) -> None:
        from pyspark.sql.types import StringType, StructField, StructType

        _pickle_by_value(fn, _make_udf, ai_query_module.answer)
        custom = frozenset(self.custom_models)
        self.spark.udf.register(_UDF, _make_udf(fn, False, custom), StringType())
        result = StructType(
            [StructField("result", StringType()), StructField("errorMessage", StringType())]
        )
        self.spark.udf.register(_UDF_OR_ERROR, _make_udf(fn, True, custom), result)

    def __call__(self, sql: str, params: Mapping[str, Any]) -> pa.Table | None:
        context = current_statement()
        namespace = context.namespace if context is not None else Namespace()
        tree = self._translate(sql, namespace)
        names = [p.name for p in tree.find_all(exp.Placeholder)]
        args: Any = None
        if names and all(not n for n in names):
            args = [params[str(i)] for i in range(1, len(names) + 1)]
        elif names:
            args = {n: params[n] for n in dict.fromkeys(names) if n in params}
        tag = f"warehouse-{context.statement_id if context is not None else 'direct'}"
        spark_context = self.spark.sparkContext
        finished = threading.Event()
        spark_context.addJobTag(tag)
        spark_context.setInterruptOnCancel(True)
        try:
            if context is not None:
                context.on_cancel(lambda: _keep_cancelling(spark_context, tag, finished))
                if context.cancelled.is_set():
                    raise RuntimeError("statement cancelled")
            defined = _replaced_definition(tree)
            if defined is not None:  # Parquet tables have no REPLACE: drop, then create
                self.spark.sql(f"DROP TABLE IF EXISTS {defined}")
                tree.set("replace", False)
            replaced = _replace_as_select(tree)
            if replaced is not None:
                self._replace_table(*replaced, args)
                return pa.table({})
            frame = self.spark.sql(printed(tree, "spark"), args=args)
            table: pa.Table = _variants_as_json(frame)
        finally:
            finished.set()
            spark_context.removeJobTag(tag)
        view = temporary_view_name(tree)
        if view is not None:
            with self._lock:
                self._temporary_views.add(view.lower())
        return table

    def metadata(self, kind: str, filters: Mapping[str, str | None]) -> pa.Table:
        if kind != "tables":  # the only metadata call agentbatch makes
            raise ValueError(f"this executor lists tables only, not {kind}")
        return spark_tables(self.spark, filters)

    def _replace_table(self, name: str, query: exp.Expression, args: Any) -> None:
        """Delta's `CREATE OR REPLACE TABLE t AS <query>`: one commit, and the query may read the
        table it replaces (a snapshot). Spark's session catalog has no REPLACE ... AS SELECT for
        Parquet tables, so the query is computed in full first, then the table swapped."""
        rows = self.spark.sql(printed(query, "spark"), args=args).localCheckpoint(eager=True)
        self.spark.sql(f"DROP TABLE IF EXISTS {name}")
        rows.write.format("parquet").saveAsTable(name)

    def _translate(self, sql: str, namespace: Namespace) -> exp.Expression:
        trees = [t for t in sqlglot.parse(sql, read="databricks") if t is not None]
        if len(trees) != 1:
            raise ValueError(f"expected one SQL statement, got {len(trees)}")
        tree = trees[0]
        assert isinstance(tree, exp.Expression)
        check_unity_catalog_names(tree)
        check_delta_column_names(tree)
        _delta_to_parquet(tree)
        with self._lock:
            views = set(self._temporary_views)
        tree = qualify_and_map(
            tree,
            namespace,
            lambda catalog, schema: (None, spark_database(catalog, schema)),
            unqualified=views,
        )
        if self.volumes_dir is not None:
            rewrite_for_spark(tree, {"/Volumes": self.volumes_dir})
        for node in list(tree.find_all(exp.ParseJSON)):  # sqlglot prints Spark's as its argument
            node.replace(exp.Anonymous(this="parse_json", expressions=[node.this]))
        for call in find_calls(tree):
            check_custom_model_call(call, self.custom_models)
            call.node.replace(self._ai_query_sql(call))
        return tree

    def _ai_query_sql(self, call: AiQueryCall) -> exp.Expression:
        if self._ai_query is None:
            raise ValueError("ai_query is not available: this warehouse has no agent configured")
        args: list[exp.Expression] = [call.endpoint, call.request]
        if call.model_parameters is not None:
            args.append(
                exp.Kwarg(this=exp.var("modelParameters"), expression=call.model_parameters)
            )
        if call.response_format is not None:
            args.append(exp.Kwarg(this=exp.var("responseFormat"), expression=call.response_format))
        if call.files is not None:
            args.append(exp.Kwarg(this=exp.var("files"), expression=call.files))
        node = exp.Anonymous(this=_UDF if call.fail_on_error else _UDF_OR_ERROR, expressions=args)
        return_type = call.return_type
        name = call.endpoint.this if isinstance(call.endpoint, exp.Literal) else None
        if return_type is None and name in self.custom_models:
            return_type = self.custom_models[name]  # inferred from the model signature
        if return_type is None or return_type.strip().upper() == "STRING":
            return node
        type_text = exp.Literal.string(return_type).sql("spark")
        template = (
            f"from_json(__call, {type_text})"
            if call.fail_on_error
            else "transform(array(__call), s -> named_struct('result', "
            f"from_json(s.result, {type_text}), 'errorMessage', s.errorMessage))[0]"
        )
        return sqlglot.parse_one(template, read="spark").transform(
            lambda n: node.copy() if isinstance(n, exp.Column) and n.name == "__call" else n
        )


def _variants_as_json(frame: Any) -> pa.Table:
    """The result as Arrow, a VARIANT column as Databricks sends it: its JSON text, marked
    VARIANT (`arrow_wire.SQL_NAME`)."""
    from pyspark.sql.functions import to_json
    from pyspark.sql.types import VariantType

    names = {f.name: "VARIANT" for f in frame.schema if isinstance(f.dataType, VariantType)}
    if not names:
        return frame.toArrow()
    text = frame.select(
        [to_json(frame[c]).alias(c) if c in names else frame[c] for c in frame.columns]
    )
    return with_sql_names(text.toArrow(), names)


def _replaced_definition(tree: exp.Expression) -> str | None:
    """The table of `CREATE OR REPLACE TABLE t (columns)`, else None."""
    if not (isinstance(tree, exp.Create) and tree.args.get("replace")) or tree.expression:
        return None
    schema = tree.this
    if str(tree.args.get("kind") or "").upper() != "TABLE" or not isinstance(schema, exp.Schema):
        return None
    return str(schema.this.sql(dialect="spark"))


def _replace_as_select(tree: exp.Expression) -> tuple[str, exp.Expression] | None:
    """(table, query) of `CREATE OR REPLACE TABLE t AS <query>`, else None."""
    if not (isinstance(tree, exp.Create) and tree.args.get("replace")):
        return None
    if str(tree.args.get("kind") or "").upper() != "TABLE" or tree.expression is None:
        return None
    if not isinstance(tree.this, exp.Table):
        return None
    return tree.this.sql(dialect="spark"), tree.expression


def _keep_cancelling(spark_context: Any, tag: str, finished: threading.Event) -> None:
    """Cancel the statement's jobs, including ones it starts after the cancel arrived
    (a statement's first job can start seconds after the call), until its work returns."""

    def run() -> None:
        while True:
            spark_context.cancelJobsWithTag(tag)
            if finished.wait(0.1):
                return

    threading.Thread(target=run, name=f"cancel-{tag}", daemon=True).start()


def _delta_to_parquet(tree: exp.Expression) -> None:
    """`USING DELTA` and Delta table properties -> a plain Parquet table."""
    props = tree.args.get("properties") if isinstance(tree, exp.Create) else None
    if props is None:
        return
    kept: list[exp.Expression] = []
    for prop in props.expressions:
        if isinstance(prop, exp.FileFormatProperty):
            kept.append(exp.FileFormatProperty(this=exp.var("PARQUET")))
        elif isinstance(prop, exp.Property) and str(prop.name).lower().startswith("delta."):
            continue
        else:
            kept.append(prop)
    props.set("expressions", kept)
