"""The executors' checkpoint folder: reading earlier runs' answers, folding the folder, and
removing what no run will read again. No lock: the folder may be a Unity Catalog volume or cloud
storage, where file locks do not exist. Two runs of one job may share it at once, so:

- a run's task files (`part-<run>-...`) are its own until it has written them to the target; it
  then leaves a marker `done-<run>`. A fold takes compacted files, its own run's files, those of
  runs marked done, and those of runs that wrote nothing for `DEAD_AFTER_S` (killed), as it
  listed them; it removes only files it folded, after the folded file is in. Files written after
  its listing, or by a run still at work, stay.
- a reader tolerates files vanishing under it: a fold publishes their answers in a new file
  before it removes them, so the read starts again from a new listing (`_READ_ATTEMPTS` times;
  after that the rows are paid again, the run goes on).
- a folder of other agent settings (another fingerprint of the same table) untouched for
  `OTHER_SETTINGS_KEPT_S` is removed by a fold: only the files it listed as old, so a run that
  starts in it meanwhile keeps what it writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.results import RESULT_COLUMN_NAMES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

# In a checkpoint folder: when the unfinished full refresh began (microseconds since the epoch,
# as text). The job output's ledger records it for every path (runner.py); the ledger is on the
# driver's disk, which a new task (serverless, a new job cluster) does not have, so a folder that
# outlives it (`checkpoint_dir`) records it too, and a run that ends the refresh removes it.
REFRESH_MARKER = "refresh-since"
# In a checkpoint folder: the file `compact` leaves, `<COMPACTED><id>.parquet`.
COMPACTED = "part-compacted-"
# In a checkpoint folder: `<DONE><run>`, a run that has written its answers to the target.
DONE = "done-"
# A run that wrote no file for this long and left no marker was killed (a live one writes each
# group of answers as it completes, and a call gives up within its timeout and retries).
DEAD_AFTER_S = 24 * 3600
# Another fingerprint's folder (the agent settings changed) is removed once untouched this long.
OTHER_SETTINGS_KEPT_S = 30 * 24 * 3600
_READ_ATTEMPTS = 3
_RUN = re.compile(r"part-([^-]+)-p\d+-a\d+-\d+\.parquet")
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


class _Vanished(Exception):
    """A listed file was removed under a read (another run's fold)."""


def checkpoint_folder(root: str | os.PathLike[str], table: str, call_fingerprint: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", table)
    return Path(root) / safe / call_fingerprint[:16]


def mark_done(folder: Path, run_id: str) -> None:
    """Run `run_id` has written its answers to the target: its files, if any, are any fold's
    from now on."""
    if next(folder.glob(f"part-{run_id}-*.parquet"), None) is not None:
        (folder / f"{DONE}{run_id}").write_bytes(b"")


def part_files(folder: Path) -> int:
    """How many answer files the folder holds (a fold leaves one)."""
    return sum(1 for _ in folder.glob("part-*.parquet")) if folder.is_dir() else 0


def end_refresh(folder: Path) -> None:
    """A run finished: the refresh's marker goes."""
    (folder / REFRESH_MARKER).unlink(missing_ok=True)


def begin_refresh(folder: Path, since: int) -> None:
    """The full refresh that began at `since` (microseconds) is unfinished: recorded whole (a
    volume takes no appends), under a hidden name and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".tmp-{uuid.uuid4().hex}-{REFRESH_MARKER}"
    temp.write_text(str(since), encoding="ascii")
    os.replace(temp, folder / REFRESH_MARKER)


def refresh_began(folder: Path) -> int | None:
    """When the unfinished full refresh the folder records began (microseconds); None if none."""
    try:
        return int((folder / REFRESH_MARKER).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def read_checkpoint(spark: SparkSession, folder: Path, run_id: str = "") -> DataFrame | None:
    """The folder's answers (only run `run_id`'s, when given), or None when there are none."""
    pattern = f"part-{run_id}-*.parquet" if run_id else "part-*.parquet"
    if not folder.is_dir() or next(folder.glob(pattern), None) is None:
        return None
    # The folder with a name filter, not the file names: a run leaves hundreds of files, and
    # Spark lists more than a few explicit paths with a job of one task per path.
    return spark.read.option("pathGlobFilter", pattern).parquet(str(folder))


def read_reusable(
    spark: SparkSession, folder: Path, key: str, schema: StructType
) -> DataFrame | None:
    """Earlier runs' answers (key and result columns) for rows of `schema`, or None (lazy).

    Only files whose key and result columns have this run's types: one Spark read of files that
    disagree (the source's key read as text once, as a number now) fails on some of them, and a
    key of another type is not this run's key ('01' is not 1). The others are skipped with a
    warning, their rows paid again; the compaction after this run removes them."""
    return _read_reusable(spark, folder, key, schema)[0]


def _read_reusable(
    spark: SparkSession, folder: Path, key: str, schema: StructType
) -> tuple[DataFrame | None, list[Path]]:
    """`read_reusable`, and the files it reads; _Vanished when one was removed meanwhile."""
    files = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not files:
        return None, []
    types = {f.name: f.dataType for f in schema.fields}
    wanted = tuple(_type_name(types[name]) for name in (key, *RESULT_COLUMN_NAMES))
    found = {path: _file_types(path, key) for path in files}
    if any(t is None and not path.exists() for path, t in found.items()):
        raise _Vanished
    usable = [path for path in files if found[path] == wanted]
    if len(usable) < len(files):
        log.warning(
            "checkpoint %s: %d of %d files hold answers whose key or result columns have other "
            "types than this run's rows (key %s %s; the source's key changed type?); not reused, "
            "their rows are paid again",
            folder,
            len(files) - len(usable),
            len(files),
            key,
            wanted[0],
        )
    return _read_files(spark, folder, files, usable, key), usable


def read_materialised(
    spark: SparkSession,
    folder: Path | None,
    key: str,
    schema: StructType,
    answers: Any,
    also: DataFrame | None = None,
) -> DataFrame | None:
    """`answers(read_reusable(...))` evaluated once (a DataFrame in Spark's memory, never read
    from the folder again), or None. When a fold of another run removes files under the read, it
    starts again from a new listing; after `_READ_ATTEMPTS` its rows are paid again.

    `also`: answers of the other store (stores.py: the driver's ledger), key and result columns
    in `schema`'s types, read with the folder's (none: `folder` None)."""
    for _ in range(_READ_ATTEMPTS):
        listed: list[Path] = []
        try:
            earlier, listed = (
                _read_reusable(spark, folder, key, schema) if folder is not None else (None, [])
            )
            if also is not None:
                earlier = also if earlier is None else _union(earlier, also)
            if earlier is None:
                return None
            found: DataFrame = answers(earlier).localCheckpoint(eager=True)
            return found
        except _Vanished:
            pass
        except Exception:
            if all(path.exists() for path in listed):
                raise  # not a file removed under the read
        log.info("checkpoint %s: files were folded by another run during the read; again", folder)
    log.warning(
        "checkpoint %s kept changing under this run's read (other runs folding it): not reused, "
        "its rows are paid again",
        folder,
    )
    return None


def _union(earlier: DataFrame, also: DataFrame) -> DataFrame:
    """The folder's answers and `also`'s, in the folder's column types."""
    from pyspark.sql import functions as F

    types = {f.name: f.dataType for f in earlier.schema.fields}
    return earlier.unionByName(
        also.select(*[F.col(f"`{name}`").cast(types[name]).alias(name) for name in earlier.columns])
    )


def _read_files(
    spark: SparkSession, folder: Path, files: list[Path], chosen: list[Path], key: str
) -> DataFrame | None:
    """The key and result columns of `chosen`, some of the folder's `files`."""
    if not chosen:
        return None
    if len(chosen) == len(files):
        read = read_checkpoint(spark, folder)
    else:  # named one by one: the folder's glob would take the others too
        read = spark.read.parquet(*(str(path) for path in chosen))
    if read is None:
        return None
    # Under the job's spelling of the key: a file written when it was `review_id` holds the
    # column a job keyed `Review_ID` reads (Spark resolves names case-insensitively).
    return read.select(read[f"`{key}`"].alias(key), *RESULT_COLUMN_NAMES)


def _file_types(path: Path, key: str) -> tuple[str, ...] | None:
    """The types of a checkpoint file's key and result columns, from its footer alone (no Spark
    job); None when it has none of them or cannot be read."""
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_type

    from agentbatch.agent.ledger import key_column

    try:
        schema = pq.read_schema(path)
        # The key in any case: the same column to Spark (the job renamed it in case only).
        stored_key = key_column(schema.names, key) or key
        fields = [schema.field(name) for name in (stored_key, *RESULT_COLUMN_NAMES)]
        return tuple(_type_name(from_arrow_type(f.type)) for f in fields)
    except (OSError, KeyError, TypeError, ValueError):  # torn, gone, or of another layout
        return None


def _type_name(data_type: Any) -> str:
    # Spark writes timestamps as INT96, which Arrow reads without a time zone: the same column.
    return str(data_type.simpleString()).replace("timestamp_ntz", "timestamp")


def latest_per_key(answers: DataFrame, key: str) -> DataFrame:
    """One row per key: the newest, whatever it is (the ledger's rule across runs: a refresh's
    transient failure, or an edited prompt's error, replaces an older answer)."""
    from pyspark.sql import functions as F

    return first_per_key(answers, key, F.col("answered_at").desc(), F.col("error").isNull().desc())


def first_per_key(rows: DataFrame, key: str, *order: Any) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy(F.col(f"`{key}`")).orderBy(*order)
    return (
        rows.withColumn("_agentbatch_rank", F.row_number().over(window))
        .where(F.col("_agentbatch_rank") == 1)
        .drop("_agentbatch_rank")
    )


def compact(spark: SparkSession, folder: Path, key: str, run_id: str | None = None) -> None:
    """Run `run_id` has written its answers to the target: mark its files done, then fold the
    folder's foldable files into one parquet file of the latest answer per key (the key and
    result columns: reuse takes the passthrough columns from the source). One Spark job; the
    driver only lists and renames files.

    A kill at any step leaves a readable checkpoint with the same latest answer per key: the new
    file is written aside (a hidden folder, which readers skip) and renamed in whole before any
    old file is removed, and each old row is a copy of the new file's row for its key or older.

    Only files with the latest run's key and result column types are folded: the others (the
    source's key changed type) are removed with a warning, so later runs read the folder again."""
    now = time.time()
    _remove_other_settings(folder, now)
    if not folder.is_dir():
        return
    if run_id:
        mark_done(folder, run_id)
    entries = list(folder.iterdir())
    _remove_leftovers(entries, now)
    old = _foldable(entries, now)
    runs = {_run_of(path) for path in old} - {None}
    if old and not (len(old) == 1 and old[0].name.startswith(COMPACTED)):
        keep, others = _same_types_as_newest(old, key)
        if keep and not (len(keep) == 1 and keep[0].name.startswith(COMPACTED)):
            listed = sorted(p for p in entries if p.name.startswith("part-"))
            if not _fold(spark, folder, listed, keep, key):
                return  # another run's fold took files of this one: it has them
        if others:  # after the new file is in: a kill before leaves them for the next run
            log.warning(
                "checkpoint %s: removed %d files whose key or result columns have other types "
                "than the latest run's (the source's key changed type?); no later run could read "
                "them",
                folder,
                len(others),
            )
            for path in others:
                _remove(path)
    written = {_run_of(p) for p in entries if p.name.startswith("part-")} - runs
    for marker in (p for p in entries if p.name.startswith(DONE)):
        if marker.name[len(DONE) :] not in written:  # its files are folded (or none is left)
            marker.unlink(missing_ok=True)


def _fold(
    spark: SparkSession, folder: Path, listed: list[Path], keep: list[Path], key: str
) -> bool:
    """Fold `keep` (some of the `listed` part files) into one new file, then remove them; False
    when another run's fold removed some of them first (nothing is removed then)."""
    name = uuid.uuid4().hex[:12]
    staging = folder / f".compacting-{name}"
    try:
        answers = _read_files(spark, folder, listed, keep, key)
        if answers is None:
            return True
        latest_per_key(answers, key).coalesce(1).write.parquet(str(staging))
    except Exception:
        if all(path.exists() for path in keep):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        log.info("checkpoint %s: another run folded files of this fold first", folder)
        return False
    written = next(staging.glob("part-*.parquet"), None)
    if written is None:
        raise OSError(f"the compacted checkpoint was not written in {staging}")
    _publish(written, folder / f"{COMPACTED}{name}.parquet")
    for path in keep:
        _remove(path)
    shutil.rmtree(staging, ignore_errors=True)
    return True


def _foldable(entries: list[Path], now: float) -> list[Path]:
    """The part files a fold may take: compacted ones, those of runs marked done, and those of
    runs that wrote nothing for DEAD_AFTER_S (killed). A live run's files are its own."""
    parts = sorted(p for p in entries if p.name.startswith("part-") and p.suffix == ".parquet")
    done = {p.name[len(DONE) :] for p in entries if p.name.startswith(DONE)}
    newest: dict[str | None, float] = {}
    for path in parts:
        run = _run_of(path)
        newest[run] = max(newest.get(run, 0.0), _mtime(path))
    return [
        path
        for path in parts
        if path.name.startswith(COMPACTED)
        or _run_of(path) in done
        or newest[_run_of(path)] < now - DEAD_AFTER_S
    ]


def _run_of(path: Path) -> str | None:
    found = _RUN.fullmatch(path.name)
    return found.group(1) if found and not path.name.startswith(COMPACTED) else None


def _remove_leftovers(entries: list[Path], now: float) -> None:
    """Hidden files of killed tasks and folds (readers skip them), once old: a live run's are
    being written."""
    for path in entries:
        if path.name.startswith((".compacting-", ".tmp-")) and _newest(path) < now - DEAD_AFTER_S:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _remove_other_settings(folder: Path, now: float) -> None:
    """Remove the folders of this table's other fingerprints untouched for OTHER_SETTINGS_KEPT_S:
    only what was listed as old, so files a run writes there meanwhile stay (and the folder)."""
    if not folder.parent.is_dir():
        return
    for other in folder.parent.iterdir():
        if other == folder or not other.is_dir() or not _FINGERPRINT.fullmatch(other.name):
            continue
        inside = [other, *other.rglob("*")]
        if _newest_of(inside) >= now - OTHER_SETTINGS_KEPT_S:
            continue
        for path in inside:
            if not path.is_dir():
                path.unlink(missing_ok=True)
        for path in sorted((p for p in inside if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):  # not empty: written meanwhile, it stays
                path.rmdir()
        log.info("checkpoint %s: removed, untouched since the agent settings changed", other)


def _newest(path: Path) -> float:
    return _newest_of([path, *path.rglob("*")] if path.is_dir() else [path])


def _newest_of(paths: list[Path]) -> float:
    return max((_mtime(p) for p in paths), default=0.0)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile
        return 0.0


def _same_types_as_newest(files: list[Path], key: str) -> tuple[list[Path], list[Path]]:
    """`files` split: those whose key and result columns have the types of the newest readable
    one (the latest run's: it wrote last), and the others."""
    types = {path: _file_types(path, key) for path in files}
    readable = [path for path in files if types[path] is not None]
    if not readable:
        return [], files
    newest = max(readable, key=lambda path: (_mtime(path), path.name))
    keep = [path for path in files if types[path] == types[newest]]
    return keep, [path for path in files if types[path] != types[newest]]


def _publish(written: Path, target: Path) -> None:
    os.replace(written, target)  # whole or absent: a rename


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
