"""Agent replies that are huge, endless, not JSON, or JSON of the wrong shape: a row error each,
never a crash or a hang. One run sends one row per misbehaviour (see hostile_agent.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.spec.loader import load_job_text

from .conftest import record_figures
from tests.support.hostile_agent import MODES, STREAM_SHAPES, WRONG_SHAPES, HostileAgent, serve_hostile

TIMEOUT_S = 2
SIZE_CAPPED = {"HUGE_JSON", "HUGE_CHUNKED", "HUGE_STREAM"}
ENDLESS = {"ENDLESS_STREAM", "ENDLESS_BODY", "ENDLESS_COMMENTS", "NO_HEADERS"}
NOT_ANSWERS = {"HTML", "EMPTY", "NOT_UTF8", "DEEP_JSON", "DEEP_OBJECT", "STATUS_999"}
NOT_ANSWERS |= {"HEADER_BOMB", "RETRY_AFTER_GARBAGE", "SSE_GARBAGE", "SSE_NO_DATA", "SSE_BINARY"}


def job(stream: bool) -> Any:
    return load_job_text(
        f"""
name: hostile_replies
source: {{table: main.s.rows, key: mode}}
request: "mode"
agent:
  endpoint: apps/hostile
  timeout_seconds: {TIMEOUT_S}
  max_retries: 1
  stream: {"true" if stream else "false"}
output: {{table: main.s.out, mode: merge}}
""",
        "hostile.yml",
    )


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[str, HostileAgent]]:
    with serve_hostile() as served:
        yield served


def run_all(tmp_path: Path, url: str, stream: bool) -> dict[str, dict[str, Any]]:
    modes = [*MODES, "WELL_BEHAVED"]
    result = agentbatch.run(
        job(stream),
        tables={
            "main.s.rows": pa.table({"mode": modes}),
            "main.s.out": tmp_path / "out.parquet",
        },
        endpoints={"apps/hostile": url},
        project_dir=tmp_path,
        state_dir=tmp_path / "state",
        progress=False,
        # Nearly every row misbehaves on purpose: every one must be tried, not cut short.
        settings={"max_error_rate": 1},
    )
    assert result.summary["rows"] == len(modes)
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sorted(r["mode"] for r in rows) == sorted(modes)
    for row in rows:
        answered = row["response"] is not None
        failed = bool(row["error"] and row["error"].strip())
        assert answered != failed, f"{row['mode']}: {row['response']!r:.80} / {row['error']!r}"
    return {r["mode"]: r for r in rows}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_every_misbehaviour_is_a_row_outcome(
    tmp_path: Path, hostile: tuple[str, HostileAgent], stream: bool
) -> None:
    url, _ = hostile
    rows = run_all(tmp_path, url, stream)
    assert rows["WELL_BEHAVED"]["response"] == "fine: WELL_BEHAVED"
    for mode in SIZE_CAPPED:
        assert rows[mode]["error"] and "byte cap" in rows[mode]["error"], rows[mode]["error"]
    for mode in ENDLESS:
        assert rows[mode]["error"] and f"within {TIMEOUT_S}s" in rows[mode]["error"], (
            mode,
            rows[mode]["error"],
        )
    for mode in NOT_ANSWERS:
        assert rows[mode]["error"], mode
    for mode in WRONG_SHAPES:
        if mode not in ("SHAPE_USAGE_WRONG", "SHAPE_TRACE_WRONG", "SHAPE_PREDICTIONS_DICT"):
            assert rows[mode]["error"] or rows[mode]["response"] == "", (mode, rows[mode])
    record_figures(
        f"hostile replies ({'stream' if stream else 'json'})",
        {
            "modes": len(MODES),
            "row_errors": sum(1 for r in rows.values() if r["error"]),
            "answered": sum(1 for r in rows.values() if r["response"] is not None),
        },
    )


def test_stream_shapes_are_covered() -> None:
    assert set(STREAM_SHAPES) <= set(MODES)
