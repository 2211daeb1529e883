"""File tables for Spark sessions without a persistent catalog: one parquet folder per table.

A table at `path` is a symbolic link to a hidden sibling version folder (`.<name>.v000003`). A write
produces a complete new version folder, then swaps the link with one `rename`, which is atomic: a
crash leaves the old table or the new one, never half of either. Readers see a plain parquet folder
at `path`. Older versions are deleted after the swap.

A `path` that is a plain parquet folder or file (not a link) is read as is; the first write moves it
to a version folder first, marking the move with a sibling `.<name>.adopting` file until the link is
made. Only that mark makes the next open link the newest complete version again (a crash between the
move and the link). A `path` removed by anyone else (`rm` of the link or of its version) is a dropped
table: nothing is restored, and the next write starts a new one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.parquet as pq
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

_SUCCESS = "_SUCCESS"


class FileTable:
    """One table stored as versioned parquet folders behind an atomically swapped link."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self._version_re = re.compile(rf"^\.{re.escape(self.path.name)}\.v(\d{{6}})$")

    def __repr__(self) -> str:
        return f"FileTable({str(self.path)!r})"

    def exists(self) -> bool:
        return self.location() is not None

    def location(self) -> Path | None:
        """The folder (or file) holding the current version, or None if the table does not exist:
        also a folder without a data file (made empty by hand: no columns to read), which the next
        write replaces."""
        self._recover()
        if not self.path.exists():
            return None
        found = self.path.resolve()
        return found if _holds_data(found) else None

    def read(self, spark: SparkSession) -> DataFrame:
        location = self.location()
        if location is None:
            raise FileNotFoundError(str(self.path))
        return read_parquet(spark, location)

    def holds_no_rows(self) -> bool:
        """True when every data file of the current version holds no row, from the files'
        parquet footers (no Spark job). False when a file holds rows or cannot be read so."""
        location = self.location()
        if location is None:
            return False
        footers = _footers(location)
        return footers is not None and all(footer.num_rows == 0 for footer in footers)

    def write(self, df: DataFrame) -> None:
        """Replace the table's content with `df` (computed in full before the swap)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._adopt_plain_data()
        number = max(self._versions(), default=-1) + 1
        target = self._version_path(number)
        df.write.mode("error").parquet(str(target))
        _keep_schema(target, df)
        self._link(target)
        self._drop_versions(keep=target)

    def drop(self) -> None:
        self._recover()
        if self.path.is_symlink():
            self.path.unlink()
        elif self.path.is_dir():
            shutil.rmtree(self.path)
        elif self.path.exists():
            self.path.unlink()
        self._drop_versions(keep=None)
        self._adopting.unlink(missing_ok=True)

    # -- versions ------------------------------------------------------------------------------------

    def _version_path(self, number: int) -> Path:
        return self.path.with_name(f".{self.path.name}.v{number:06d}")

    def _versions(self) -> list[int]:
        if not self.path.parent.is_dir():
            return []
        found = (self._version_re.match(p.name) for p in self.path.parent.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _complete(self, number: int) -> bool:
        version = self._version_path(number)
        return version.is_file() or (version / _SUCCESS).exists()

    def _link(self, target: Path) -> None:
        temp = self.path.with_name(f".{self.path.name}.link-{uuid.uuid4().hex[:8]}")
        os.symlink(target.name, temp, target_is_directory=target.is_dir())
        os.replace(temp, self.path)  # the atomic swap

    def _adopt_plain_data(self) -> None:
        """Move a plain (unlinked) parquet folder or file at `path` into a version folder."""
        if self.path.exists() and not self.path.is_symlink():
            number = max(self._versions(), default=-1) + 1
            target = self._version_path(number)
            if self.path.is_dir():
                (self.path / _SUCCESS).touch()
            self._adopting.touch()
            os.replace(self.path, target)
            self._link(target)
            self._adopting.unlink()

    @property
    def _adopting(self) -> Path:
        return self.path.with_name(f".{self.path.name}.adopting")

    def _recover(self) -> None:
        """Relink the newest complete version when an adoption was cut before its link (see the
        module docstring). A missing link without that mark is a table someone dropped."""
        if self.path.exists() or not self._adopting.exists():
            return
        complete = [n for n in self._versions() if self._complete(n)]
        if complete:
            log.warning("restoring the link of table %s to its newest complete version", self.path)
            self._link(self._version_path(complete[-1]))
        self._adopting.unlink()

    def _drop_versions(self, keep: Path | None) -> None:
        for number in self._versions():
            version = self._version_path(number)
            if keep is not None and version == keep:
                continue
            if version.is_dir():
                shutil.rmtree(version, ignore_errors=True)
            else:
                version.unlink(missing_ok=True)


# Where Spark keeps a DataFrame's schema in the footer of each parquet file it writes (Spark's
# ParquetReadSupport.SPARK_METADATA_KEY): what its schema inference reads back.
SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"


def read_parquet(spark: SparkSession, location: Path) -> DataFrame:
    """The parquet folder (or file) at `location` as a DataFrame. Spark infers a folder's schema
    with a job of its own (on a fresh session up to a second); when every data file holds the
    schema Spark wrote into it, the same one, that schema is read from the files' footers
    instead (what the job would find), and no job runs."""
    schema = _written_schema(spark, location)
    reader = spark.read if schema is None else spark.read.schema(schema)
    return reader.parquet(str(location))


def _written_schema(spark: SparkSession, location: Path) -> Any:
    """The StructType Spark wrote into every data file at `location`, or None (a file without
    it, files with different ones, none readable, or schema merging asked for)."""
    from pyspark.sql.types import StructType

    if str(spark.conf.get("spark.sql.parquet.mergeSchema", "false")).lower() == "true":
        return None
    footers = _footers(location)
    if footers is None:
        return None
    found = {(footer.metadata or {}).get(SPARK_SCHEMA_KEY) for footer in footers}
    written = found.pop() if len(found) == 1 else None
    if written is None:
        return None
    try:
        return StructType.fromJson(json.loads(written))
    except (ValueError, KeyError, TypeError):
        return None


def _data_files(location: Path) -> list[Path]:
    """A parquet file, or a folder's data files (Spark's rule: names starting with `.` or `_`,
    such as `_SUCCESS`, are not data)."""
    if not location.is_dir():
        return [location]
    return [p for p in location.iterdir() if not p.name.startswith((".", "_")) and p.is_file()]


def _footers(location: Path) -> list[pq.FileMetaData] | None:
    """The parquet footer of each data file at `location` (no Spark job); None when one is not
    readable as parquet."""
    import pyarrow.parquet as pq

    try:
        return [pq.read_metadata(path) for path in _data_files(location)]
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None


def _holds_data(location: Path) -> bool:
    """A parquet file, or a folder with a data file."""
    return bool(_data_files(location))


def _keep_schema(folder: Path, df: DataFrame) -> None:
    """An empty DataFrame may be written as no data file at all, which loses its columns: write an
    empty part file with the schema then."""
    if any(p.name.startswith("part-") for p in folder.iterdir()):
        return
    import pyarrow.parquet as pq

    from agentbatch.engines.spark.arrow import spark_to_arrow

    schema = spark_to_arrow(df.schema)
    pq.write_table(schema.empty_table(), folder / "part-00000-empty.parquet")
