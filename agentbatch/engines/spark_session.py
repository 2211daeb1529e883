"""Finding or making the SparkSession, and what it can do.

An active session (a Databricks job or notebook, Databricks Connect, a `spark-submit` driver) is
used as is and never stopped by us. Without one, a local session is made: bound to 127.0.0.1, no UI,
UTC, and Python workers running this interpreter (PySpark's default, `python3` from PATH, may not
have the packages this process has).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentbatch.errors import MissingDependencyError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
}
_CLUSTER_TAG = "spark.databricks.clusterUsageTags.clusterId"


def pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise MissingDependencyError("pyspark", "spark") from None
    return pyspark


def active_session() -> SparkSession | None:
    pyspark()
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def local_session(settings: Mapping[str, Any]) -> SparkSession:
    """A new local session; `settings["spark_conf"]` adds or overrides Spark options."""
    pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    master = str(settings.get("master", "local[*]"))
    builder = SparkSession.builder.master(master).appName(
        str(settings.get("app_name", "agentbatch"))
    )
    conf = dict(_LOCAL_CONF) if master.startswith("local") else {}
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # every listener on loopback only
    if settings.get("warehouse_dir"):
        conf["spark.sql.warehouse.dir"] = os.path.abspath(str(settings["warehouse_dir"]))
    conf.update({str(k): str(v) for k, v in dict(settings.get("spark_conf") or {}).items()})
    for name, value in conf.items():
        builder = builder.config(name, value)
    log.info("starting a Spark session (master %s)", master)
    return builder.getOrCreate()


def on_databricks(spark: SparkSession) -> bool:
    """True on a Databricks cluster, serverless compute or Databricks Connect (native ai_query)."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    return bool(conf_value(spark, _CLUSTER_TAG))


def is_local(spark: SparkSession) -> bool:
    """Driver and executors share one machine (and so one file system)."""
    return str(conf_value(spark, "spark.master") or "").startswith("local")


def has_persistent_catalog(spark: SparkSession) -> bool:
    return conf_value(spark, "spark.sql.catalogImplementation") == "hive"


def default_parallelism(spark: SparkSession) -> int:
    try:
        return max(1, int(spark.sparkContext.defaultParallelism))
    except Exception:  # Spark Connect has no SparkContext
        return max(1, int(conf_value(spark, "spark.default.parallelism") or 8))


def conf_value(spark: SparkSession, name: str) -> str | None:
    try:
        value = spark.conf.get(name, None)
    except Exception:  # some sessions refuse to read cluster confs
        return None
    return None if value is None else str(value)
