"""Push-down of a job with `files:`: `ai_query(endpoint, prompt, files => <bytes>)` over
`read_files('/Volumes/...', format => 'binaryFile')`, as Databricks documents multimodal input,
on the loopback warehouse (the unmodified connector; DuckDB and Spark executors). The warehouse's
ai_query takes `files` only in that form: BINARY bytes, for a foundation-model endpoint."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pytest

import agentbatch
from agentbatch.testing.images import describe, sample_answer, sample_image, write_sample_folder

from .ai_query import RESPONSES_AGENT_TYPE
from .server import Warehouse, serve_warehouse
from .spark_executor import SparkExecutor

ROOT = Path(__file__).resolve().parents[3]
VISION = "databricks-llama-4-maverick"
PHOTOS = "/Volumes/main/shop/photos"
COUNT = 12


def vision_agent(endpoint: str, request: Any, **named: Any) -> str:
    """A multimodal foundation model: a STRING prompt and the file's bytes."""
    assert isinstance(request, str), "foundation models take a STRING request"
    files = named.get("files")
    return describe(files) if files is not None else f"no file for: {request[:30]}"


def push_down_job(tmp_path: Path) -> Path:
    """The example image job, pointed at a vision model on Model Serving (so: push-down)."""
    text = (ROOT / "jobs" / "describe_images.yml").read_text()
    text = text.replace("endpoint: apps/vision-agent", f"endpoint: {VISION}")
    # The Spark executor keeps Parquet tables (no MERGE): mode overwrite.
    text = re.sub(r"(?m)^(output:\n  table: .*)$", r"\1\n  mode: overwrite", text)
    assert "mode: overwrite" in text
    path = tmp_path / "jobs" / "describe_images_fm.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=[pytest.mark.spark])])
def vision_warehouse(
    request: pytest.FixtureRequest, make_warehouse: Callable[..., Warehouse], tmp_path: Path
) -> Iterator[Warehouse]:
    volumes = tmp_path / "volumes"
    write_sample_folder(volumes / "main" / "shop" / "photos", COUNT)
    custom = {"vision-agent-on-serving": RESPONSES_AGENT_TYPE}
    if request.param == "duckdb":
        yield make_warehouse(ai_query=vision_agent, volumes_dir=volumes, custom_models=custom)
        return
    spark = request.getfixturevalue("spark_session")
    executor = SparkExecutor(
        spark, ai_query=vision_agent, volumes_dir=volumes, custom_models=custom
    )
    spark.sql("CREATE DATABASE IF NOT EXISTS main__shop")
    with serve_warehouse(executor) as wh:
        yield wh


def run_sql(wh: Warehouse, *statements: str) -> list[dict[str, Any]]:
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
        return cur.fetchall_arrow().to_pylist() if cur.description else []


def test_the_image_job_pushes_down_files_and_every_row_is_answered_from_its_bytes(
    vision_warehouse: Warehouse, tmp_path: Path
) -> None:
    plan = agentbatch.plan(push_down_job(tmp_path), target="databricks-sql")
    assert plan.strategy == "push-down"
    main = plan.statements[-1].sql
    assert f"ai_query('{VISION}', `_request`, failOnError => false, files => `_file`)" in main
    run_sql(vision_warehouse, "CREATE SCHEMA IF NOT EXISTS main.shop")
    run_sql(vision_warehouse, *(s.sql for s in plan.statements))
    rows = run_sql(
        vision_warehouse,
        "SELECT path, length, response, error, request_fingerprint FROM main.shop.photo_descriptions",
    )
    by_name = {Path(row["path"]).name: row for row in rows}
    assert sorted(by_name) == sorted(sample_image(i)[0] for i in range(COUNT))
    for index in range(COUNT):
        row = by_name[sample_image(index)[0]]
        assert row["error"] is None
        assert row["response"] == sample_answer(index)
        assert row["length"] == len(sample_image(index)[1])
    assert len({row["request_fingerprint"] for row in rows}) == COUNT  # the bytes count


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        # A STRING literal, not the bytes of a file.
        (f"SELECT ai_query('{VISION}', 'p', files => 'photo.png')", "must be BINARY"),
        # A STRING column (the path), not the bytes.
        (
            f"SELECT ai_query('{VISION}', 'p', files => path) "
            f"FROM read_files('{PHOTOS}', format => 'binaryFile')",
            "must be BINARY",
        ),
        # Files are input for a foundation or external model, not for a custom model's signature.
        (
            "SELECT ai_query('vision-agent-on-serving', 'p', files => content) "
            f"FROM read_files('{PHOTOS}', format => 'binaryFile')",
            "not for the custom model",
        ),
        # The argument is `files`.
        (
            f"SELECT ai_query('{VISION}', 'p', file => content) "
            f"FROM read_files('{PHOTOS}', format => 'binaryFile')",
            "unsupported argument 'file'",
        ),
    ],
)
def test_files_in_another_form_are_refused(
    vision_warehouse: Warehouse, sql: str, message: str
) -> None:
    with pytest.raises(databricks.sql.exc.Error, match=message):
        run_sql(vision_warehouse, sql)


def test_the_documented_form_is_accepted(vision_warehouse: Warehouse) -> None:
    rows = run_sql(
        vision_warehouse,
        f"SELECT path, ai_query('{VISION}', 'What is in this image?', files => content) AS answer "
        f"FROM read_files('{PHOTOS}', format => 'binaryFile')",
    )
    assert sorted(r["answer"] for r in rows) == sorted(sample_answer(i) for i in range(COUNT))
