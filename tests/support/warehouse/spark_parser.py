"""Refuse the SQL Databricks' parser refuses, with Apache Spark's own parser.

The DuckDB executor reads statements with sqlglot, which accepts much that Databricks refuses (a
fake that accepts them makes tests that cannot fail). Databricks SQL is Spark SQL plus
extensions, so every statement is first parsed, never run, by the SQL parser of the process's one
local Spark session (`sessionState().sqlParser().parsePlan`, as `spark.sql` parses before it
analyses). A statement Spark cannot parse fails as a warehouse fails it: Spark's message (error
class `PARSE_SYNTAX_ERROR`, SQLSTATE 42601, position, the `== SQL ==` excerpt). Parameter markers
(`:name`, `?`) are left in the text, as the warehouse parses them before binding.

Databricks-only statements with a documented syntax that Spark lacks are allowlisted in
`DATABRICKS_ONLY`, each with its reference page: the volume commands `PUT`, `GET`, `REMOVE`
(run by the connector) and `CREATE VOLUME`. The service answers those before any executor
(staging.py); a statement that only starts like one is refused like any other.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from typing import Any

_DOCS = "https://docs.databricks.com/aws/en/sql/language-manual/"
_TEXT = r"'(?:[^'\\]|\\.)*'"  # a STRING literal
_NAME = r"(?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+)){0,2}"
_END = r"\s*;?\s*$"

# Statements Databricks documents and Spark's grammar lacks, each matched as its reference page
# writes its syntax: (pattern, reference page, the page's example).
DATABRICKS_ONLY: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.I | re.S), _DOCS + page, example)
    for pattern, page, example in (
        (
            rf"^\s*PUT\s+{_TEXT}\s+INTO\s+{_TEXT}(?:\s+OVERWRITE)?{_END}",
            "sql-ref-syntax-aux-connector-put-into",
            "PUT '/home/bob/data.csv' INTO "
            "'/Volumes/test_catalog/test_schema/test_volume/2023/06/file1.csv' OVERWRITE",
        ),
        (
            rf"^\s*GET\s+{_TEXT}\s+TO\s+{_TEXT}{_END}",
            "sql-ref-syntax-aux-connector-get",
            "GET '/Volumes/test_catalog/test_schema/test_volume/2023/06/file1.csv' "
            "TO '/home/bob/data.csv'",
        ),
        (
            rf"^\s*REMOVE\s+{_TEXT}{_END}",
            "sql-ref-syntax-aux-connector-remove",
            "REMOVE '/Volumes/test_catalog/test_schema/test_volume/2023/06/file1.csv'",
        ),
        (
            rf"^\s*CREATE\s+(?:EXTERNAL\s+)?VOLUME\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}"
            rf"(?:\s+LOCATION\s+{_TEXT})?(?:\s+COMMENT\s+{_TEXT})?{_END}",
            "sql-ref-syntax-ddl-create-volume",
            "CREATE VOLUME IF NOT EXISTS main.default.my_volume COMMENT 'files for the job'",
        ),
    )
)

_lock = threading.Lock()
_session: Any = None


def shared_session() -> Any:
    """The process's one local Spark session, started on first use (it takes seconds); a
    session someone else started (`getOrCreate`) is the one used."""
    global _session
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    with _lock:
        if _session is not None and SparkContext._active_spark_context is not None:
            return _session
        # Python workers run this interpreter (it has pyarrow), whichever test starts Spark.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        warehouse_dir = tempfile.mkdtemp(prefix="loopback-spark-warehouse-")
        atexit.register(shutil.rmtree, warehouse_dir, ignore_errors=True)
        with warnings.catch_warnings():
            # PySpark warns that it does not yet support the installed pandas major version.
            warnings.simplefilter("ignore", FutureWarning)
            _session = (
                SparkSession.builder.master("local[2]")
                .appName("loopback-warehouse-tests")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.shuffle.partitions", "2")
                .config("spark.default.parallelism", "2")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.driver.host", "127.0.0.1")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.warehouse.dir", warehouse_dir)
                .getOrCreate()
            )
        _session.sparkContext.setLogLevel("ERROR")
        return _session


class SparkParseError(ValueError):
    """A statement Spark's parser refuses, worded as the warehouse words it."""


def databricks_only(sql: str) -> str | None:
    """The reference page of `sql` when it is an allowlisted Databricks-only statement."""
    for pattern, source, _ in DATABRICKS_ONLY:
        if pattern.match(sql):
            return source
    return None


def check_statement(sql: str) -> None:
    """Raise SparkParseError when Databricks' parser would refuse `sql`."""
    if databricks_only(sql) is not None:
        return
    refusal = _refusal(sql)
    if refusal is not None:
        raise SparkParseError(refusal)


@functools.lru_cache(maxsize=4096)
def _refusal(sql: str) -> str | None:
    """Spark's parse error for `sql`, or None; cached by text (statements repeat)."""
    from pyspark.errors import ParseException

    parser = shared_session()._jsparkSession.sessionState().sqlParser()
    try:
        parser.parsePlan(sql)
    except ParseException as refused:
        return databricks_message(str(refused), refused.getSqlState())
    return None


_FIRST_LINE = re.compile(
    r"^(?P<text>\[[A-Z_.]+\].*?)\s*(?:SQLSTATE: \w{5})?\s*(?P<pos>\(line \d+, pos \d+\))?$"
)


def databricks_message(spark_message: str, sqlstate: str | None) -> str:
    """Spark's parse error as Databricks words it: `[CLASS] text SQLSTATE: <code> (line l, pos
    p)`, then the `== SQL ==` excerpt (Spark 3.5 leaves the SQLSTATE out of the message)."""
    first, _, rest = spark_message.strip().partition("\n")
    found = _FIRST_LINE.match(first)
    if found is None:
        return spark_message.strip()
    state = f" SQLSTATE: {sqlstate}" if sqlstate else ""
    position = f" {found['pos']}" if found["pos"] else ""
    return f"{found['text']}{state}{position}" + (f"\n{rest}" if rest else "")
