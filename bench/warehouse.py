"""The loopback SQL warehouse (tests/support/warehouse) in a process of its own, for the benchmark's
databricks-sql paths: `warehouse_process` starts it, `load_table` gives it a source table,
`settings` and `environment` are how a run reaches it. Its SQL runs in its own process, never
on the client's CPU, as on Databricks.

    python -m bench.warehouse VOLUMES   # serve until stopped or stdin closes; prints the address
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "dapi-bench-warehouse"
WAREHOUSE_ID = "loopback"
HTTP_PATH = f"/sql/1.0/warehouses/{WAREHOUSE_ID}"
STOP_TIMEOUT_S = 30.0


def serve(volumes: Path) -> None:
    """The warehouse in this process (its `/Volumes` in `volumes`), until SIGTERM or, when
    stdin is a pipe, until it closes (the process that started it ended); prints its address
    first."""
    import signal
    import threading

    from tests.support.warehouse.duckdb_executor import DuckDBExecutor
    from tests.support.warehouse.server import serve_warehouse

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        while os.read(0, 4096):  # not sys.stdin: a daemon thread blocked on its lock at exit
            pass
        stop.set()

    if stat.S_ISFIFO(os.fstat(0).st_mode):
        threading.Thread(target=watch_stdin, daemon=True).start()
    with (
        DuckDBExecutor(volumes_dir=volumes) as executor,
        serve_warehouse(executor, token=TOKEN, volumes_dir=volumes) as wh,
    ):
        sys.stdout.write(f"http://{wh.host}:{wh.port}\n")
        sys.stdout.flush()
        stop.wait()


@contextlib.contextmanager
def warehouse_process(volumes: Path, log: Path | None = None) -> Iterator[str]:
    """The warehouse in a new process, its `/Volumes` in `volumes`, its stderr (the local Spark
    session's too: statements are parsed by Spark's parser first) to `log` if given; yields its
    address, stops it on leaving. Its stdin is a pipe from here, so it ends with this process
    however that ends."""
    volumes.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("wb")) if log is not None else None
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.warehouse", str(volumes)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert proc.stdout is not None
        host = proc.stdout.readline().strip()
        if not host.startswith("http://"):
            raise RuntimeError(f"the loopback warehouse did not start (exit {proc.wait(30)})")
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def connect(host: str) -> Iterator[Any]:
    """A cursor on the warehouse at `host`, through databricks-sql-connector."""
    import databricks.sql

    address = host.removeprefix("http://").rsplit(":", 1)[0]
    with (
        databricks.sql.connect(
            server_hostname=address,
            http_path=HTTP_PATH,
            _connection_uri=f"{host}{HTTP_PATH}",
            access_token=TOKEN,
            enable_telemetry=False,
        ) as conn,
        conn.cursor() as cur,
    ):
        yield cur


def load_table(host: str, volumes: Path, table: str, parquet: Path) -> None:
    """Create the warehouse table `table` (catalog.schema.name) holding the rows of `parquet`,
    read from a copy in the warehouse's volume `<catalog>.<schema>.raw`."""
    catalog, schema, name = table.split(".")
    raw = volumes / catalog / schema / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(parquet, raw / f"{name}.parquet")
    with connect(host) as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {catalog}.{schema}")
        cur.execute(
            f"CREATE TABLE {table} AS SELECT * FROM read_files("
            f"'/Volumes/{catalog}/{schema}/raw/{name}.parquet', format => 'parquet')"
        )


def settings(host: str) -> dict[str, Any]:
    """The databricks-sql target's settings for the warehouse at `host`."""
    return {"host": host, "warehouse_id": WAREHOUSE_ID}


def environment(workdir: Path) -> dict[str, str]:
    """The environment a run needs: the warehouse's token for databricks-sdk's auth, and no
    profile file (a user's `~/.databrickscfg` must not be read)."""
    return {"DATABRICKS_TOKEN": TOKEN, "DATABRICKS_CONFIG_FILE": str(workdir / "no-databrickscfg")}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.warehouse VOLUMES")
    serve(Path(sys.argv[1]))
