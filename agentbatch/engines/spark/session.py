"""Finding or making the SparkSession, and what it can do.

An existing session (a Databricks job or notebook, Databricks Connect, a `spark-submit` driver) is
used as is and never stopped by us. `SparkSession.getActiveSession()` alone misses it in any thread
but the one that made it: it is thread-local on Spark Connect (pyspark `sql/connect/session.py`,
SPARK-44694) and, in pinned-thread mode, on classic Spark too. So `existing_session` also asks for
the process's default session (`SparkSession.active()`, pyspark 3.5+) and, on Databricks, takes
the runtime's session as Databricks' wheel template does (`from databricks.sdk.runtime import
spark`, else `builder.getOrCreate()`, which returns the runtime's session there).

Without one, a local session is made (and owned, so stopped on close): bound to 127.0.0.1, no UI,
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
    """The session this process already has, in any thread; None when there is none."""
    pyspark()
    from pyspark.sql import SparkSession

    found = SparkSession.getActiveSession()
    if found is not None:
        return found
    found = _connect_default_session()
    if found is not None:
        return found
    try:
        return SparkSession.active()  # the active or default session (pyspark 3.5+)
    except Exception:  # PySparkRuntimeError NO_ACTIVE_OR_DEFAULT_SESSION
        pass
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return _databricks_runtime_session()
    return None


def _connect_default_session() -> SparkSession | None:
    """A Spark Connect session made in another thread (Databricks Connect, serverless)."""
    # Only when loaded: a Connect session imported it already, and importing it without the
    # connect extra (grpc) can even exit the process (pyspark `sql/connect/utils.py`).
    module = sys.modules.get("pyspark.sql.connect.session")
    if module is None:
        return None
    ConnectSession = module.SparkSession
    try:
        session: SparkSession | None = ConnectSession.getActiveSession() or ConnectSession.active()
        return session
    except Exception:
        return None


def _databricks_runtime_session() -> SparkSession | None:
    try:
        from databricks.sdk.runtime import spark as runtime_spark

        if runtime_spark is not None:
            return runtime_spark  # type: ignore[no-any-return]
    except Exception:  # an old SDK, or no runtime globals in this process
        pass
    from pyspark.sql import SparkSession

    log.info("taking the Databricks runtime's Spark session (builder.getOrCreate)")
    return SparkSession.builder.getOrCreate()


def local_session(settings: Mapping[str, Any]) -> SparkSession:
    """A new local session; `settings["spark_conf"]` adds or overrides Spark options. With
    `SPARK_REMOTE` set, a Spark Connect session of that server instead."""
    pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if os.environ.get("SPARK_REMOTE"):
        # PySpark's switch to Spark Connect: a master beside it is refused
        # (CANNOT_CONFIGURE_SPARK_CONNECT_MASTER) and only runtime options can be set. The URL is
        # not logged: it may carry a token (`sc://host/;token=...`).
        log.info("starting a Spark Connect session (SPARK_REMOTE; `master` is not used)")
        builder = SparkSession.builder
        for name, value in dict(settings.get("spark_conf") or {}).items():
            builder = builder.config(str(name), str(value))
        return builder.getOrCreate()
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


def is_serverless(spark: SparkSession, settings: Mapping[str, Any]) -> bool:
    """Serverless compute, where Python UDFs cannot reach the network (Databricks docs:
    compute/serverless/limitations). The runtime version of serverless starts with `client.`
    (as MLflow's `is_in_databricks_serverless_runtime` reads it); the `serverless` setting says so
    explicitly (true/false)."""
    setting = settings.get("serverless")
    if setting is not None:
        return setting is True or str(setting).lower() == "true"
    return os.environ.get("DATABRICKS_RUNTIME_VERSION", "").startswith("client.")


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect session (Databricks Connect, serverless, standard access mode)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


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
