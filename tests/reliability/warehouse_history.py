"""A small project for run-history tests on the databricks-sql target: a reviews table in a loopback
warehouse (DuckDB behind the unmodified connector), a job whose prompt, mode and path (REST
fallback to an Apps agent, or push-down `ai_query` served by the warehouse) change between runs,
and helpers that run it in-process or as a CLI child and read the target through the warehouse."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import databricks.sql
import httpx

import agentbatch
from agentbatch.testing.agent_server import AgentServer
from tests.support.databricks_env import auth_env
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse

from .processes import child_env

SOURCE = "main.shop.reviews"
OUTPUT = "main.shop.review_answers"
APP = "apps/reviewer"  # the REST fallback: an Apps agent mapped to the loopback agent
MODEL = "reviewer-model"  # push-down: a Model Serving endpoint the warehouse's ai_query calls
TOKEN = "dapi-history-token"
# The project file's target: runs in-process and CLI children share its checkpoint (one ledger
# per target name and output table).
TARGET = "wh"
REPO = Path(__file__).resolve().parents[2]


def serving_ai_query(agent_url: str) -> Any:
    """`ai_query` inside the warehouse: a chat call to the agent's Model Serving route (an HTTP
    error is raised, so the warehouse reports it as Databricks does)."""
    client = httpx.Client(base_url=agent_url, timeout=30)

    def ai_query(endpoint: str, request: Any, **named: Any) -> str:
        body = {"messages": [{"role": "user", "content": request}]}
        reply = client.post(f"/serving-endpoints/{endpoint}/invocations", json=body)
        reply.raise_for_status()
        content: str = reply.json()["choices"][0]["message"]["content"]
        return content

    return ai_query


@contextlib.contextmanager
def serve(agent: AgentServer) -> Iterator[Warehouse]:
    with (
        DuckDBExecutor(ai_query=serving_ai_query(agent.url), ai_query_concurrency=4) as executor,
        serve_warehouse(executor, token=TOKEN) as wh,
    ):
        yield wh


_TABLE = "`main`.`shop`.`review_answers`"
# Each mode's write of the answers into the target, as each path sends it (to hold it in the
# loopback warehouse: `Warehouse.hold`).
WRITES = {
    ("rest", "merge"): "ON target.`review_id` = staged.`review_id`\nWHEN MATCHED",
    ("rest", "append"): "AND target.`request_fingerprint` = staged.`request_fingerprint`",
    ("rest", "overwrite"): f"CREATE OR REPLACE TABLE {_TABLE} AS",
    ("push-down", "merge"): "ON target.`review_id` = answers.`review_id`\nWHEN MATCHED",
    ("push-down", "append"): "AND target.`request_fingerprint` = answers.`request_fingerprint`",
    ("push-down", "overwrite"): f"CREATE OR REPLACE TABLE {_TABLE} AS",
}
# The last statement before the write, after the run chose its rows: on push-down the target's
# creation (the write statement chooses them), on the REST fallback the staging table's (its
# inputs query chose them, and the agent answered them).
BEFORE_WRITE = {
    "push-down": f"CREATE TABLE IF NOT EXISTS {_TABLE} AS",
    "rest": "CREATE OR REPLACE TABLE `main`.`shop`.`review_answers__agentbatch_staged_",
}


def statement_to_hold(path: str, mode: str, moment: str) -> str:
    """What a run on `path` in `mode` is held at, for another run's write to land "between" its
    choice of rows and its write, or to overtake its write ("overtaken")."""
    return BEFORE_WRITE[path] if moment == "between" else WRITES[path, mode]


@dataclass
class JobSettings:
    mode: str = "merge"
    prompt: str = "Review"
    path: str = "rest"  # or "push-down"

    @property
    def endpoint(self) -> str:
        return APP if self.path == "rest" else MODEL


class WarehouseProject:
    def __init__(self, root: Path, agent: AgentServer, wh: Warehouse) -> None:
        self.root = root
        self.agent = agent
        self.wh = wh
        self.settings = JobSettings()
        (root / "jobs").mkdir(parents=True, exist_ok=True)
        # The CLI reads the target from the project file; credentials from the environment.
        (root / "agentbatch.yml").write_text(
            f"targets:\n  wh:\n    engine: databricks-sql\n    host: http://{wh.host}:{wh.port}\n"
            f"    warehouse_id: {wh.warehouse_id}\n"
        )

    @property
    def target_settings(self) -> dict[str, Any]:
        return {
            "host": f"http://{self.wh.host}:{self.wh.port}",
            "warehouse_id": self.wh.warehouse_id,
        }

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def endpoints(self) -> dict[str, str]:
        return {APP: self.agent.url} if self.settings.path == "rest" else {}

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with databricks.sql.connect(**self.wh.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute(statement)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def write_source(self, rows: dict[int, str | None]) -> None:
        self.sql(f"CREATE SCHEMA IF NOT EXISTS {SOURCE.rsplit('.', 1)[0]}")
        self.sql(f"CREATE OR REPLACE TABLE {SOURCE} (review_id BIGINT, text STRING)")
        values = ", ".join(
            f"({k}, {'NULL' if t is None else repr(t)})" for k, t in sorted(rows.items())
        )
        if values:
            self.sql(f"INSERT INTO {SOURCE} VALUES {values}")

    def write_job(self) -> Path:
        s = self.settings
        path = self.root / "jobs" / "reviews.yml"
        text = f"""name: reviews
source:
  table: {SOURCE}
  key: review_id
  columns: [text]
request: "concat('{s.prompt}: ', text)"
agent:
  endpoint: {s.endpoint}
  max_retries: 0
  max_concurrency: 4
output:
  table: {OUTPUT}
  mode: {s.mode}
"""
        if not path.exists() or path.read_text() != text:
            # Replaced whole, never rewritten in place: two runs at once may be reading it (and
            # writing it: each its own temporary file, or one's replace finds the other's gone).
            fresh = path.with_suffix(f".{threading.get_ident()}.tmp")
            fresh.write_text(text)
            fresh.replace(path)
        return path

    def options(self, **options: Any) -> dict[str, Any]:
        return {
            "settings": self.target_settings,
            "endpoints": self.endpoints,
            "project_dir": self.root,
            "state_dir": self.state,
            "progress": False,
            **options,
        }

    def call_fingerprint(self) -> str:
        plan = agentbatch.plan(self.write_job(), TARGET, **self.options())
        return plan.call_fingerprint

    def run(self, **options: Any) -> dict[str, Any]:
        with agentbatch.run(self.write_job(), TARGET, **self.options(**options)) as result:
            return dict(result.summary)

    def estimate(self, **options: Any) -> Any:
        """`agentbatch.estimate` of the job on the warehouse (its sample sent for real)."""
        return agentbatch.estimate(self.write_job(), TARGET, **self.options(**options))

    def start_cli(self, *flags: str, logs: Path | None = None) -> subprocess.Popen[bytes]:
        """`agentbatch run` of the job on the warehouse in a child process (to be killed); its
        stdout and stderr in `logs` (`out`, `err`) when given."""
        mapped = [f"--endpoint={name}={url}" for name, url in self.endpoints.items()]
        args = [
            sys.executable, "-m", "agentbatch", "run", str(self.write_job()), "--target", TARGET,
            "--no-progress", "--show", "0", *mapped,
            "--state-dir", str(self.state), "--project-dir", str(self.root), *flags,
        ]  # fmt: skip
        env = child_env({"PYTHONPATH": str(REPO), **auth_env(self.root, token=TOKEN)})
        if logs is None:
            return subprocess.Popen(
                args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        with (logs / "out").open("wb") as out, (logs / "err").open("wb") as err:
            return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=err)

    def target(self) -> list[dict[str, Any]]:
        """The output rows, read through the warehouse (none when the table does not exist)."""
        schema, table = OUTPUT.split(".")[1:]
        with databricks.sql.connect(**self.wh.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.tables(catalog_name="main", schema_name=schema, table_name=table)
            if not [r for r in cur.fetchall() if str(r[2]) == table]:
                return []
            cur.execute(f"SELECT review_id, request_fingerprint, error, answered_at FROM {OUTPUT}")
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
