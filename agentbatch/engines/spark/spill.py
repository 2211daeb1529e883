"""Where a long run's answers wait for the write when the driver shares no disk with the
executors (`arrow.StagedBatches`): a table beside the output, or a parquet folder beside the
engine's file tables. Each is named for its run (`<table>__agentbatch_answers_<start>_<id>`) and
removed after the write; one that a killed run left behind is removed by the first spill of the
same output a day later (a run at work keeps its own).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from agentbatch.sql.quoting import name_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

MARK = "__agentbatch_answers_"
KEPT_S = 24 * 3600.0  # a write takes minutes to hours; a day-old spill is a killed run's


def spill_name(table: str, now: float | None = None) -> str:
    """The spill's name for a run writing `table` (its last name part) that starts now."""
    started = int(time.time() if now is None else now)
    return f"{table}{MARK}{started}_{uuid.uuid4().hex[:8]}"


def _leftover(name: str, table: str, now: float) -> bool:
    """Whether `name` is a spill of `table` named for a run that started over a day ago."""
    prefix = f"{table}{MARK}".lower()
    if not name.lower().startswith(prefix):
        return False
    started = name[len(prefix) :].split("_", 1)[0]
    return started.isdigit() and now - int(started) > KEPT_S


class SpillTable:
    """Answers waiting for the write in a catalog table: `namespace` (catalog and schema, or the
    schema alone in the session catalog) and `name`."""

    def __init__(self, spark: SparkSession, namespace: tuple[str, ...], table: str) -> None:
        self._spark = spark
        self._namespace = namespace
        self._table = table
        self.name = name_path(*namespace, spill_name(table))

    def append(self, df: DataFrame) -> None:
        df.write.mode("append").saveAsTable(self.name)

    def read(self) -> DataFrame:
        return self._spark.table(self.name)

    def remove(self) -> None:
        self._spark.sql(f"DROP TABLE IF EXISTS {self.name}")

    def remove_leftovers(self, now: float | None = None) -> None:
        """Drop the spills of this output that killed runs left in this namespace."""
        now = time.time() if now is None else now
        try:
            rows = self._spark.sql(f"SHOW TABLES IN {name_path(*self._namespace)}").collect()
        except Exception as err:  # a listing refused fails no run: the leftovers only wait
            log.warning("could not list the tables beside %s: %s", self._table, err)
            return
        for row in rows:
            name = str(row["tableName"])
            if not row["isTemporary"] and _leftover(name, self._table, now):
                self._spark.sql(f"DROP TABLE IF EXISTS {name_path(*self._namespace, name)}")


class SpillFolder:
    """Answers waiting for the write in a parquet folder the executors can read."""

    def __init__(self, spark: SparkSession, parent: Path, table: str) -> None:
        self._spark = spark
        self._table = table
        self.path = parent / spill_name(table)

    def append(self, df: DataFrame) -> None:
        df.write.mode("append").parquet(str(self.path))

    def read(self) -> DataFrame:
        return self._spark.read.parquet(str(self.path))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def remove_leftovers(self, now: float | None = None) -> None:
        """Remove the spills of this output that killed runs left beside this one."""
        now = time.time() if now is None else now
        if self.path.parent.is_dir():
            for folder in self.path.parent.iterdir():
                if _leftover(folder.name, self._table, now):
                    shutil.rmtree(folder, ignore_errors=True)


Spill = SpillTable | SpillFolder
