"""The example image job on Spark: `read_files(..., format => 'binaryFile')` read by Spark's own
binaryFile source over a local folder, the REST fallback on the executors (mapInArrow tasks) and on
the driver, every answer checked against the image's bytes, an oversized file an error row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.images import make_png, sample_answer, sample_image, write_sample_folder

ROOT = Path(__file__).resolve().parents[3]
JOB = ROOT / "jobs" / "describe_images.yml"
COUNT = 20


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent(minimal=True) as server:
        yield server


@pytest.mark.parametrize("place", ["executors", "driver"])
def test_image_job_on_spark_answers_every_file_from_its_bytes(
    agent: AgentServer, tmp_path: Path, make_engine: Any, place: str
) -> None:
    make_engine()  # the suite's session is the active one: the run uses it
    photos = write_sample_folder(tmp_path / "photos", COUNT)
    big = make_png(3, 3, (0, 0, 0), padding=8_000)
    (photos / "big.png").write_bytes(big)
    job = tmp_path / "jobs" / "describe_images.yml"
    job.parent.mkdir()
    job.write_text(JOB.read_text().replace("  name: path", "  name: path\n  max_bytes: 6000"))
    out = tmp_path / "photos.parquet"

    def run() -> dict[str, Any]:
        with agentbatch.run(
            job,
            target="spark",
            tables={"/Volumes/main/shop/photos": photos, "main.shop.photo_descriptions": out},
            endpoints={"apps/vision-agent": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            settings={"warehouse_dir": str(tmp_path / "warehouse"), "rest_fallback_on": place},
            progress=False,
        ) as result:
            return dict(result.summary)

    arrow_batch = "spark.sql.execution.arrow.maxRecordsPerBatch"
    setting = make_engine().spark.conf.get(arrow_batch, None)
    summary = run()
    assert make_engine().spark.conf.get(arrow_batch, None) == setting  # restored after the run
    assert summary["strategy"] == "rest-fallback"
    assert summary["table_rows"] == COUNT + 1
    assert summary["table_errors"] == 1
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    for index in range(COUNT):
        row = rows[sample_image(index)[0]]
        assert (row["response"], row["error"]) == (sample_answer(index), None)
    assert rows["big.png"]["error"] == (
        f"[permanent] file is {len(big)} bytes, over the limit of 6000 bytes "
        "(files.max_bytes); it was not sent"
    )
    assert "content" not in pq.read_table(out).schema.names
    assert agent.stats().requests_total == COUNT
    again = run()
    assert again["table_rows"] == COUNT + 1
    assert agent.stats().requests_total == COUNT  # nothing re-sent


@pytest.fixture
def serving() -> Iterator[AgentServer]:
    with serve_agent() as server:  # Model Serving routes: chat bodies too
        yield server


def test_push_down_files_through_the_registered_ai_query(
    serving: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    """Off Databricks, the spark engine's own ai_query takes `files => content` as Databricks
    documents it and sends the bytes as an image part (media type from the bytes). A file over
    files.max_bytes is the REST fallback's error row."""
    from agentbatch.errors import AgentbatchError
    from agentbatch.planning.builder import build_plan
    from agentbatch.planning.definition import PushDown
    from agentbatch.planning.targets import Target
    from agentbatch.spec.loader import load_job_text

    photos = write_sample_folder(tmp_path / "photos", 6)
    big = make_png(3, 3, (0, 0, 0), padding=8_000)
    (photos / "big.png").write_bytes(big)
    text = JOB.read_text().replace("endpoint: apps/vision-agent", "endpoint: vision\n  api: chat")
    text = text.replace("  name: path", "  name: path\n  max_bytes: 6000")
    job = load_job_text(text, "jobs/describe_images.yml")
    plan = build_plan(job, Target("spark", "spark"))
    assert plan.strategy == "push-down" and isinstance(plan.steps, PushDown)
    out = tmp_path / "pushed"
    url = f"{serving.url}/serving-endpoints/vision/invocations"
    engine = make_engine(
        {"ai_query_endpoints": {"vision": url}},
        tables={"/Volumes/main/shop/photos": photos, "main.shop.photo_descriptions": out},
        output_tables=["main.shop.photo_descriptions"],
    )
    for statement in plan.steps.statements:
        engine.execute(statement.sql)
    rows = {Path(r["path"]).name: r for r in engine.read_table(plan.job.output.table).to_pylist()}
    for index in range(6):
        row = rows[sample_image(index)[0]]
        assert (row["response"], row["error"]) == (sample_answer(index), None)
    assert (rows["big.png"]["response"], rows["big.png"]["error"]) == (
        None,
        f"[permanent] file is {len(big)} bytes, over the limit of 6000 bytes "
        "(files.max_bytes); it was not sent",
    )
    sent = serving.stats().requests_total
    listing = "read_files('/Volumes/main/shop/photos', format => 'binaryFile')"
    with pytest.raises(AgentbatchError, match="files must be BINARY"):
        list(
            engine.fetch_batches(
                f"SELECT ai_query('vision', 'p', failOnError => false, files => path) FROM {listing}"
            )
        )
    assert sent == 6  # never the big file
