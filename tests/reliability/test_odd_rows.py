"""Odd and hostile row values: each row gets an answer or a row error, never a crash.

NULL, empty, 1 MB, emoji, right-to-left and bidi overrides, NUL characters, text that looks like
SSE or JSON, bytes that are not UTF-8; through the HTTP agent (JSON and streamed) and the built-in
agent. Odd keys too: empty, emoji, NULL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import AgentbatchError
from agentbatch.spec.loader import load_job_text
from agentbatch.testing.agent_server import AgentServer, serve_agent

ODD_TEXTS: dict[str, str | None] = {
    "null": None,
    "empty": "",
    "blank": "   \t  ",
    "megabyte": "all work and no play " * 50_000,
    "emoji": "🔥💥 printer 👩‍👩‍👧‍👦 on fire 🇳🇱",
    "rtl": "الطابعة لا تعمل — המדפסת לא עובדת",
    "bidi-override": "invoice \u202egnp.exe\u202c total",
    "zero-width": "pass\u200bword\ufeff\u200d",
    "combining": "Z̸̡̢͈̳̈́̿a̵̡͓̗͂l̷̢̛͕͝g̶̨̙̈́ő̴̡",
    "nul": "before\x00after",
    "crlf": "line one\r\nline two\rline three\n",
    "sse-lookalike": 'data: [DONE]\n\nevent: error\ndata: {"error": "fake"}\n\n',
    "json-lookalike": '{"output": [], "error": {"message": "not really"}}',
    "backslashes": "C:\\temp\\new\\x00\\u0000\\",
    "control": "".join(chr(c) for c in range(1, 32)),
    "surrogate-escapes": "\\ud800 and \\udfff",
    "permanent": "this one always fails: PERMANENT_ERROR",
}


def job(endpoint: str, *, stream: bool = False, key_type: str = "id", mode: str = "merge") -> Any:
    return load_job_text(
        f"""
name: odd_rows
source: {{table: main.s.rows, key: {key_type}, columns: [kind]}}
request: "concat('Q: ', body)"
agent:
  endpoint: {endpoint}
  timeout_seconds: 10
  max_retries: 1
  stream: {"true" if stream else "false"}
output: {{table: main.s.out, mode: {mode}}}
""",
        "odd.yml",
    )


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def run(
    job_: Any, table: Any, tmp_path: Path, agent: AgentServer | None = None
) -> list[dict[str, Any]]:
    result = agentbatch.run(
        job_,
        tables={"main.s.rows": table, "main.s.out": tmp_path / "out.parquet"},
        endpoints={"apps/odd": agent.url} if agent else {},
        project_dir=tmp_path,
        state_dir=tmp_path / "state",
        progress=False,
    )
    rows: list[dict[str, Any]] = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert result.summary["table_rows"] == len(rows)
    return rows


def assert_answer_or_error(rows: list[dict[str, Any]], kinds: list[str]) -> None:
    assert Counter(r["kind"] for r in rows) == Counter(kinds), "rows lost or duplicated"
    for row in rows:
        answered = row["response"] is not None
        failed = bool(row["error"] and row["error"].strip())
        assert answered != failed, (
            f"{row['kind']}: response={row['response']!r:.80} error={row['error']!r}"
        )


def odd_table() -> pa.Table:
    kinds = list(ODD_TEXTS)
    return pa.table(
        {
            "id": pa.array(range(len(kinds)), pa.int64()),
            "kind": kinds,
            "body": pa.array(list(ODD_TEXTS.values()), pa.string()),
        }
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_odd_texts_over_http(tmp_path: Path, agent: AgentServer, stream: bool) -> None:
    rows = run(job("apps/odd", stream=stream), odd_table(), tmp_path, agent)
    assert_answer_or_error(rows, list(ODD_TEXTS))
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["null"]["error"]  # a NULL request is a row error, not a call
    assert "PERMANENT_ERROR" in by_kind["permanent"]["error"]
    for kind in ("emoji", "rtl", "bidi-override", "combining", "nul", "megabyte"):
        assert by_kind[kind]["response"] is not None, by_kind[kind]["error"]
        # The agent got the text whole: the demo agent echoes what it was asked.
        assert ODD_TEXTS[kind][:200] in by_kind[kind]["response"] or kind == "megabyte"  # type: ignore[index]
    assert agent.stats().requests_total == len(ODD_TEXTS) - 1  # nothing sent for the NULL row


def test_odd_texts_through_the_builtin_agent(tmp_path: Path) -> None:
    rows = run(job("builtin:instant"), odd_table(), tmp_path)
    assert_answer_or_error(rows, list(ODD_TEXTS))


def test_odd_texts_from_a_dataframe(tmp_path: Path, agent: AgentServer) -> None:
    frame = odd_table().to_pandas()
    rows = run(job("apps/odd"), frame, tmp_path, agent)
    assert_answer_or_error(rows, list(ODD_TEXTS))


def test_non_utf8_bytes_in_a_parquet_binary_column(tmp_path: Path, agent: AgentServer) -> None:
    blobs = [
        b"fine",
        b"\xff\xfe\xfd",
        b"half \xc3",
        b"\xed\xa0\x80 surrogate",
        b"nul \x00 byte",
        None,
    ]
    table = pa.table(
        {
            "id": pa.array(range(len(blobs)), pa.int64()),
            "kind": [f"blob{i}" for i in range(len(blobs))],
            "body": pa.array(blobs, pa.binary()),
        }
    )
    source = tmp_path / "blobs.parquet"
    pq.write_table(table, source)
    cast_job = load_job_text(
        """
name: blobs
source: {table: main.s.rows, key: id, columns: [kind]}
request: "concat('Q: ', CAST(body AS STRING))"
agent: {endpoint: apps/odd, timeout_seconds: 10, max_retries: 1}
output: {table: main.s.out, mode: merge}
""",
        "blobs.yml",
    )
    rows = run(cast_job, source, tmp_path, agent)
    assert_answer_or_error(rows, [f"blob{i}" for i in range(len(blobs))])


def test_non_utf8_csv_is_a_clear_error_not_a_traceback(tmp_path: Path, agent: AgentServer) -> None:
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"id,kind,body\n1,ok,fine\n2,latin1,caf\xe9 cr\xe8me\n3,ok2,also fine\n")
    with pytest.raises(AgentbatchError) as caught:
        run(job("apps/odd"), source, tmp_path, agent)
    assert "latin1.csv" in str(caught.value) or "UTF-8" in str(caught.value).upper()


def test_unencodable_python_text_is_a_clear_error(tmp_path: Path, agent: AgentServer) -> None:
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "kind": ["ok", "lone"],
            "body": pd.Series(["fine", "x\ud800y"], dtype=object),
        }
    )
    with pytest.raises(AgentbatchError):
        run(job("apps/odd"), frame, tmp_path, agent)


def test_odd_keys(tmp_path: Path, agent: AgentServer) -> None:
    keys = ["", " ", "😀", "a'b", "a`b", "\u202e", "x" * 10_000, "NULL", "null"]
    table = pa.table(
        {"id": keys, "kind": [f"k{i}" for i in range(len(keys))], "body": ["q"] * len(keys)}
    )
    rows = run(job("apps/odd"), table, tmp_path, agent)
    assert sorted(r["id"] for r in rows) == sorted(keys)
    assert_answer_or_error(rows, [f"k{i}" for i in range(len(keys))])
    # A second run finds every odd key answered.
    again = run(job("apps/odd"), table, tmp_path, agent)
    assert len(again) == len(keys)
    assert agent.stats().requests_total == len(keys)


def test_null_key_is_never_answered_twice(tmp_path: Path, agent: AgentServer) -> None:
    """A row whose key is NULL cannot be merged or resumed: it must not pile up in the target."""
    table = pa.table({"id": ["a", None], "kind": ["ok", "null-key"], "body": ["x", "y"]})
    for attempt in range(3):
        agentbatch.run(
            job("apps/odd"),
            tables={"main.s.rows": table, "main.s.out": tmp_path / "out.parquet"},
            endpoints={"apps/odd": agent.url},
            project_dir=tmp_path,
            state_dir=tmp_path / f"state-{attempt}",  # a fresh checkout, another machine, ...
            progress=False,
        )
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sum(r["id"] is None for r in rows) <= 1, rows
    assert agent.stats().requests_total <= 2


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_null_requests_are_done_once_and_never_stop_the_run(
    tmp_path: Path, agent: AgentServer, mode: str
) -> None:
    """Rows whose request is NULL come first and outnumber the rest: they are row errors, never
    sent, not counted as the agent failing (the run answers every other row), and held as done
    by the target (no run redoes them, appending never piles them up)."""
    ids = list(range(40))
    table = pa.table(
        {
            "id": ids,
            "kind": ["x"] * 40,
            "body": [None if i < 30 else f"text {i}" for i in ids],
        }
    )
    spec = job("apps/odd", mode=mode)
    summaries = []
    for _ in range(3):
        result = agentbatch.run(
            spec,
            tables={"main.s.rows": table, "main.s.out": tmp_path / "out.parquet"},
            endpoints={"apps/odd": agent.url},
            project_dir=tmp_path,
            state_dir=tmp_path / "state",
            progress=False,
        )
        summaries.append(dict(result.summary))
    first, *later = summaries
    assert (first["sent"], first["ok"], first["errors"]) == (10, 10, 30), first
    for summary in later:
        assert (summary["rows"], summary["sent"], summary["skipped"]) == (0, 0, 40), summary
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sorted(r["id"] for r in rows) == ids
    assert all((r["error"] is None) == (r["id"] >= 30) for r in rows), rows
    assert all(r["request_fingerprint"] for r in rows)
    assert agent.stats().requests_total == 10
