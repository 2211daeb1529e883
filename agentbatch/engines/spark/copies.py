"""Answers a run on the driver receives, copied into the checkpoint folder as they arrive.

On serverless compute the REST fallback runs on the driver, whose ledger (agent/ledger.py) is a
SQLite file on the task's local disk: a task that is killed or preempted takes it along, and the
next run, a new task, would pay again for every answer the killed one received. When the target
names a checkpoint folder (`checkpoint_dir`: a Unity Catalog volume, which outlives the task),
the answers the ledger commits are also written there, every `checkpoint_every_s` seconds, as
whole parquet files named as an executor task's (`CheckpointWriter`): the next run on the driver
takes them into its ledger (stores.py, `share_with_ledger`) and one on the executors reads them
as its own. After its write a run marks them done, and folds the folder (checkpoints.py) once it
holds `FOLD_AT_FILES` files. A kill loses at most the calls in flight and the answers of the last interval. A
folder the disk refuses stops the copies with a warning, never the run: they only save calls.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from agentbatch.agent.ledger import key_column
from agentbatch.engines.spark.distributed import CheckpointWriter
from agentbatch.results import RESULT_COLUMN_NAMES

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# Seconds between two copies (the target setting `checkpoint_every_s`): a file per interval, so a
# long run leaves a few hundred small files until its fold, and a kill pays this much again.
EVERY_S = 30.0
# A run's write folds the folder once it holds this many files (a fold rewrites every key's
# answer: not worth it for a few files, which a read takes as cheaply as one).
FOLD_AT_FILES = 64
# Bytes of answers held for a copy before it is written early (memory stays flat with a fast
# agent or long answers).
MOST_BYTES = 32 * 1024 * 1024
# Seconds `close` waits for a copy being written before the run's write goes on without it: a
# volume write that hangs must not hold the write of what the run answered (a task being
# stopped has a grace period, then is killed).
CLOSE_WAIT_S = 10.0


class DriverCopies:
    """Copies of a run's committed answers (the key and result columns) in `folder`."""

    def __init__(self, folder: Path, key: str, run_id: str, every_s: float = EVERY_S) -> None:
        # Its own run name: files of two runs never share one (the run id may be a fixed name),
        # and `-` separates the parts of a checkpoint file's name.
        self.run = f"{run_id.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
        self.folder = folder
        self.copied = 0
        self._key = key
        self._every_s = every_s
        self._writer = CheckpointWriter(folder, self.run, partition=0, attempt=0)
        self._lock = threading.Lock()
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self._refused = False
        self._closing = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._copy_every, name="agentbatch-copies")
        self._thread.daemon = True  # a kill needs no goodbye: the files written are whole
        self._thread.start()

    def add(self, rows: pa.RecordBatch | pa.Table) -> None:
        """Rows the ledger committed (its writer thread): held for the next copy."""
        import pyarrow as pa

        if self._refused:
            return
        try:
            whole = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
            key = key_column(whole.column_names, self._key) or self._key
            table = whole.select([key, *RESULT_COLUMN_NAMES])
        except Exception as err:  # copies only save calls: never the ledger's commit
            self._refuse(err)
            return
        with self._lock:
            self._pending.append(table)
            self._pending_bytes += table.nbytes
            full = self._pending_bytes >= MOST_BYTES
        if full:
            self._wake.set()

    def close(self) -> None:
        """Copy what is held, and stop (again: nothing). A copy still being written after
        `CLOSE_WAIT_S` is left to its thread, and what is held is not copied: the run's write
        goes on (the ledger holds every answer for it)."""
        self._closing = True
        self._wake.set()
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            self._refuse(TimeoutError(f"a copy took over {CLOSE_WAIT_S:g} s"))
            return
        self._copy()

    def _copy_every(self) -> None:
        while not self._closing:
            self._wake.wait(self._every_s)
            self._wake.clear()
            self._copy()

    def _copy(self) -> None:
        import pyarrow as pa

        with self._lock:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending or self._refused:
            return
        try:
            table = pa.concat_tables(pending, promote_options="default")
            self._writer.write(table)
        except Exception as err:  # the disk refused (OSError), or anything else: never the run
            self._refuse(err)
            return
        self.copied += table.num_rows

    def _refuse(self, err: Exception) -> None:
        self._refused = True
        with self._lock:
            self._pending, self._pending_bytes = [], 0
        log.warning(
            "cannot copy answers to the checkpoint folder %s (%s): a killed run's next run "
            "pays again for what this run receives from now on; the run goes on",
            self.folder,
            err,
        )
