"""What the spark run histories share: a source of eight keys, one of which the agent refuses, a
simulated kill, and runs of one job into a catalog table (`History`, the `history` fixture)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import agentbatch
from agentbatch.testing.agent_server import AgentServer

KEYS = list(range(1, 9))
FAILING = 8  # its text makes the agent answer 400: a permanent row error


class Crash(BaseException):
    """A process killed at this point: nothing below catches it."""


def write_source(path: Path) -> Path:
    """The source `id,txt` of `KEYS`, the `FAILING` key's text refused by the agent."""
    path.write_text(
        "id,txt\n"
        + "".join(f"{i},{'PERMANENT_ERROR' if i == FAILING else f't{i}'}\n" for i in KEYS)
    )
    return path


class History:
    """Runs of one job (prompt `prefix`) into a parquet table of the session catalog."""

    def __init__(self, agent: AgentServer, spark: Any, tmp_path: Path) -> None:
        self.agent = agent
        self.spark = spark
        self.tmp_path = tmp_path
        self.table = f"default.ckpt_{uuid.uuid4().hex[:8]}"
        self.source = write_source(tmp_path / "src.csv")
        (tmp_path / "jobs").mkdir()

    def run(
        self,
        prefix: str,
        source: str = "table: main.s.src",
        mode: str = "merge",
        settings: dict[str, Any] | None = None,
        key: str = "id",
        **options: Any,
    ) -> dict[str, Any]:
        job = self.tmp_path / "jobs" / f"ckpt_{prefix}.yml"
        job.write_text(
            f"name: ckpt\nsource: {{{source}, key: {key}, columns: [txt]}}\n"
            f"request: \"concat('{prefix}: ', txt)\"\nagent: {{endpoint: apps/ckpt}}\n"
            f"output: {{table: {self.table}, mode: {mode}}}\n"
        )
        before = self.agent.stats().requests_total
        with agentbatch.run(
            job,
            target="spark",
            tables={"main.s.src": self.source},
            endpoints={"apps/ckpt": self.agent.url},
            state_dir=self.tmp_path / "state",
            project_dir=self.tmp_path,
            settings={
                "warehouse_dir": str(self.tmp_path / "warehouse"),
                "storage": "catalog",
                **(settings or {}),
            },
            progress=False,
            **options,
        ) as result:
            summary = dict(result.summary)
        summary["calls"] = self.agent.stats().requests_total - before
        return summary

    def rows(self) -> dict[int, tuple[Any, ...]]:
        """key -> (response, error, answered_at); every key must be there once."""
        rows = [r.asDict() for r in self.spark.table(self.table).collect()]
        by_key = {r["id"]: (r["response"], r["error"], r["answered_at"]) for r in rows}
        assert sorted(by_key) == KEYS and len(rows) == len(KEYS), rows
        return by_key

    def answering(self, prefix: str) -> None:
        """Each key answers `prefix`; the failing key is a failure."""
        for key, (response, error, _) in self.rows().items():
            if key == FAILING:
                assert response is None and error.startswith("[permanent] "), error
            else:
                assert response == f"answer: {prefix}: t{key}", response

    def truncate(self) -> None:
        self.spark.sql(f"TRUNCATE TABLE {self.table}")

    def drop(self) -> None:
        self.spark.sql(f"DROP TABLE {self.table}")

    def checkpoint_folder(self) -> Path:
        (folder,) = (self.tmp_path / "state" / "spark-checkpoints").glob("*/*")
        return folder

    def checkpoint_files(self) -> list[str]:
        return sorted(p.name for p in self.checkpoint_folder().iterdir())
