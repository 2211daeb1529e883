"""The local engine runs the rendered Databricks SQL in DuckDB: write modes behave like Delta's."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentbatch.engines.local import LocalEngine
from agentbatch.errors import EngineError, UsageError
from agentbatch.planning.builder import build_plan
from agentbatch.planning.definition import RestFallback, RunOptions
from agentbatch.planning.targets import resolve_target
from agentbatch.results import result_arrow_fields
from agentbatch.spec.loader import load_job_text

JOB = """\
name: t
source:
  table: main.s.tickets
  key: id
  columns: [subject]
  where: "status = 'open'"
request: "concat('Q: ', subject)"
agent: {{endpoint: apps/agent}}
output: {{table: main.s.out, mode: {mode}}}
"""


def plan_for(mode: str, **options: object) -> RestFallback:
    job = load_job_text(JOB.format(mode=mode), "job.yml")
    steps = build_plan(job, resolve_target("local"), RunOptions(**options)).steps  # type: ignore[arg-type]
    assert isinstance(steps, RestFallback)
    return steps


def answers(ids: list[int], fingerprints: list[str], text: str) -> pa.RecordBatch:
    n = len(ids)
    fields = [pa.field("id", pa.int64()), pa.field("subject", pa.string()), *result_arrow_fields()]
    now = datetime.now(timezone.utc)
    columns = {
        "id": ids,
        "subject": [f"s{i}" for i in ids],
        "response": [f"{text}{i}" for i in ids],
        "error": [None] * n,
        "http_status": [200] * n,
        "attempts": [1] * n,
        "latency_ms": [1.0] * n,
        "input_tokens": [None] * n,
        "output_tokens": [None] * n,
        "trace_id": [None] * n,
        "custom_outputs": [None] * n,
        "request_fingerprint": fingerprints,
        "answered_at": [now] * n,
    }
    return pa.RecordBatch.from_pydict(columns, schema=pa.schema(fields))


@pytest.fixture
def tickets(tmp_path: Path) -> Path:
    path = tmp_path / "tickets.csv"
    pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "subject": ["a", "b", "c", "d"],
            "status": ["open", "open", "open", "closed"],
        }
    ).to_csv(path, index=False)
    return path


def engine(tmp_path: Path, tickets: Path, **kwargs: object) -> LocalEngine:
    return LocalEngine(
        tables={"main.s.tickets": tickets, **kwargs.pop("tables", {})},  # type: ignore[dict-item]
        warehouse_dir=tmp_path / "wh",
        **kwargs,  # type: ignore[arg-type]
    )


def write(eng: LocalEngine, steps: RestFallback, batch: pa.RecordBatch) -> int:
    return eng.write_results(steps.write, [batch], batch.schema).rows_written


def test_inputs_select_filters_and_fingerprints(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("merge")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    rows = pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).to_pylist()
    assert [r["id"] for r in sorted(rows, key=lambda r: r["id"])] == [1, 2, 3]
    assert rows[0]["_request"].startswith("Q: ")
    assert all(len(r["request_fingerprint"]) == 64 for r in rows)


def test_merge_is_incremental_and_idempotent(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("merge")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    todo = (
        pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).sort_by("id").to_pylist()
    )
    fps = [r["request_fingerprint"] for r in todo]
    write(eng, steps, answers([1, 2], fps[:2], "first"))
    left = [
        r["id"]
        for r in pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).to_pylist()
    ]
    assert left == [3]
    write(eng, steps, answers([2, 3], fps[1:], "second"))
    write(eng, steps, answers([2, 3], fps[1:], "second"))  # a repeated write changes nothing
    out = eng.read_table("main.s.out").sort_by("id").to_pylist()
    assert [(r["id"], r["response"]) for r in out] == [
        (1, "first1"),
        (2, "second2"),
        (3, "second3"),
    ]


def test_a_changed_prompt_resends_every_row(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("merge")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    todo = pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).to_pylist()
    write(
        eng, steps, answers([r["id"] for r in todo], [r["request_fingerprint"] for r in todo], "x")
    )
    assert list(eng.fetch_batches(steps.inputs.sql)) == [] or all(
        b.num_rows == 0 for b in eng.fetch_batches(steps.inputs.sql)
    )
    changed = load_job_text(JOB.format(mode="merge").replace("'Q: '", "'Question: '"), "job.yml")
    new_steps = build_plan(changed, resolve_target("local")).steps
    assert isinstance(new_steps, RestFallback)
    again = pa.Table.from_batches(list(eng.fetch_batches(new_steps.inputs.sql)))
    assert sorted(again["id"].to_pylist()) == [1, 2, 3]


def test_retry_errors_selects_only_failed_rows(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("merge")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    todo = (
        pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).sort_by("id").to_pylist()
    )
    batch = answers([1, 2, 3], [r["request_fingerprint"] for r in todo], "x")
    errors = pa.array([None, "HTTP 500: boom", None], pa.string())
    columns = batch.columns  # pyarrow 14 (the floor) has no RecordBatch.set_column
    columns[batch.schema.get_field_index("error")] = errors
    batch = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
    write(eng, steps, batch)
    assert all(b.num_rows == 0 for b in eng.fetch_batches(steps.inputs.sql))
    retry = plan_for("merge", retry_errors=True)
    ids = pa.Table.from_batches(list(eng.fetch_batches(retry.inputs.sql)))["id"].to_pylist()
    assert ids == [2]


def test_append_never_duplicates_a_key_fingerprint(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("append")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    todo = (
        pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).sort_by("id").to_pylist()
    )
    batch = answers([1, 2], [r["request_fingerprint"] for r in todo[:2]], "x")
    write(eng, steps, batch)
    write(eng, steps, batch)  # e.g. a crash between the write and the ledger's bookkeeping
    assert sorted(eng.read_table("main.s.out")["id"].to_pylist()) == [1, 2]


def test_overwrite_replaces_the_table(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("overwrite")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    # Answers of other requests (stale fingerprints), and of keys the selection lacks (4 is
    # closed, 9 is not in the source).
    write(eng, steps, answers([1, 2, 3, 4, 9], ["a", "b", "c", "d", "e"], "old"))
    # An overwrite writing key 3: its row is replaced, keys outside the selection are dropped,
    # and the selected keys it did not answer keep their rows until a run answers them.
    write(eng, steps, answers([3], ["c"], "new"))
    rows = sorted(eng.read_table("main.s.out").to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["response"]) for r in rows] == [(1, "old1"), (2, "old2"), (3, "new3")]


def test_overwrite_keeps_the_rows_it_already_holds(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("overwrite")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    todo = pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).sort_by("id")
    fingerprints = todo["request_fingerprint"].to_pylist()
    write(eng, steps, answers([1, 2], fingerprints[:2], "old"))
    # The next run selects only row 3; the target then holds 1 and 2 as they were, and 3.
    left = pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql)))
    assert left["id"].to_pylist() == [3]
    write(eng, steps, answers([3], fingerprints[2:], "new"))
    rows = sorted(eng.read_table("main.s.out").to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["response"]) for r in rows] == [(1, "old1"), (2, "old2"), (3, "new3")]


def test_warehouse_tables_persist_across_engines(tmp_path: Path, tickets: Path) -> None:
    steps = plan_for("merge")
    first = engine(tmp_path, tickets)
    first.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    write(first, steps, answers([1], ["f"], "x"))
    first.close()
    second = engine(tmp_path, tickets)
    assert second.table_exists("main.s.out")
    assert second.read_table("main.s.out")["id"].to_pylist() == [1]


@pytest.mark.parametrize("suffix", [".parquet", "_delta"])
def test_a_mapped_output_is_written_back_to_its_file(
    tmp_path: Path, tickets: Path, suffix: str
) -> None:
    steps = plan_for("merge")
    out = tmp_path / f"out{suffix}"
    eng = engine(tmp_path, tickets, tables={"main.s.out": out}, output_tables=["main.s.out"])
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    write(eng, steps, answers([1, 2], ["f1", "f2"], "x"))
    eng.close()
    assert out.exists()
    # A new engine seeded from the file merges into what is there.
    again = engine(tmp_path, tickets, tables={"main.s.out": out}, output_tables=["main.s.out"])
    again.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    write(again, steps, answers([2, 3], ["f2", "f3"], "y"))
    assert sorted(again.read_table("main.s.out")["id"].to_pylist()) == [1, 2, 3]
    if suffix == ".parquet":
        assert sorted(pq.read_table(out)["id"].to_pylist()) == [1, 2, 3]


def test_a_dataframe_can_be_a_source(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": [7, 8], "subject": ["x", "y"], "status": ["open", "open"]})
    steps = plan_for("merge")
    eng = LocalEngine(tables={"main.s.tickets": frame}, warehouse_dir=tmp_path / "wh")
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    ids = pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql)))["id"].to_pylist()
    assert sorted(ids) == [7, 8]


def test_a_quoted_empty_csv_field_is_an_empty_string(tmp_path: Path) -> None:
    """`""` is text with nothing in it (Spark's CSV reader agrees); only an empty field is NULL.
    Read as NULL, the row's request was NULL: a row error instead of a call."""
    path = tmp_path / "tickets.csv"
    path.write_text('id,subject,status\n1,"",open\n2,,open\n3,"a",open\n')
    eng = LocalEngine(tables={"main.s.tickets": path}, warehouse_dir=tmp_path / "wh")
    steps = plan_for("merge")
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    rows = pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).to_pylist()
    subjects = {r["id"]: r["subject"] for r in rows}
    assert subjects == {1: "", 2: None, 3: "a"}


def test_missing_tables_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        LocalEngine(tables={"main.s.tickets": tmp_path / "nope.csv"}, warehouse_dir=tmp_path)
    with pytest.raises(UsageError, match="unsupported file type"):
        LocalEngine(tables={"main.s.tickets": tmp_path / "x.xlsx"}, warehouse_dir=tmp_path)
    eng = LocalEngine(warehouse_dir=tmp_path / "wh")
    with pytest.raises(EngineError, match="does not exist"):
        list(eng.fetch_batches("SELECT * FROM main.s.missing"))
    assert not (tmp_path / "wh").exists()  # reading never creates the warehouse


def test_a_merge_matching_one_target_row_twice_fails_as_in_delta(
    tmp_path: Path, tickets: Path
) -> None:
    """Delta: DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE; DuckDB would pick one."""
    steps = plan_for("merge")
    eng = engine(tmp_path, tickets)
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    todo = pa.Table.from_batches(list(eng.fetch_batches(steps.inputs.sql))).sort_by("id")
    fps = todo.column("request_fingerprint").to_pylist()
    write(eng, steps, answers([1], fps[:1], "first"))
    with pytest.raises(
        EngineError, match=r"\[DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE\]"
    ):
        write(eng, steps, answers([1, 1], [fps[0], fps[0]], "again"))
    out = eng.read_table("main.s.out").to_pylist()
    assert [(r["id"], r["response"]) for r in out] == [(1, "first1")]


@pytest.mark.parametrize("output", ["warehouse", "parquet"])
def test_a_merge_replacing_every_row_stays_within_the_memory_limit(
    tmp_path: Path, output: str
) -> None:
    """DuckDB keeps an UPDATE's rows in memory past its memory_limit, so a MERGE replacing every
    answer of a large table failed (a million rows at the default 256MB). The engine deletes the
    matched rows and inserts the new ones, which spill: the same table, in bounded memory."""
    rows = 50_000
    source = tmp_path / "tickets.parquet"
    pq.write_table(pa.table({"id": range(rows), "subject": [f"s{i}" for i in range(rows)]}), source)
    tables: dict[str, object] = {"main.s.tickets": source}
    if output == "parquet":
        tables["main.s.out"] = tmp_path / "out.parquet"
    steps = plan_for("merge")
    eng = LocalEngine(
        {"memory_limit": "16MB"},
        tables=tables,  # type: ignore[arg-type]
        warehouse_dir=tmp_path / "wh",
        output_tables=["main.s.out"],
    )
    eng.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    ids = list(range(rows))
    write(eng, steps, answers(ids, [f"old{i}" for i in ids], "old"))
    write(eng, steps, answers(ids, [f"new{i}" for i in ids], "new"))
    out = eng.read_table("main.s.out")
    assert out.num_rows == rows
    assert sorted(out.column("response").to_pylist()) == sorted(f"new{i}" for i in ids)
    if output == "parquet":
        assert pq.read_table(tmp_path / "out.parquet").num_rows == rows


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.lists(st.tuples(st.sampled_from([1, 2, 3, None]), st.integers(0, 9)), max_size=5),
    source=st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, None]), st.integers(0, 9)), max_size=5),
)
def test_the_merge_writes_what_delta_writes(
    tmp_path: Path, target: list[tuple[int | None, int]], source: list[tuple[int | None, int]]
) -> None:
    """`WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *` on any tables: each target
    row matched by one source row becomes that row, a target row matched by several is refused,
    unmatched source rows are inserted (repeats too), the rest is kept; whether the engine runs it
    as a MERGE or as a DELETE and INSERT."""
    eng = LocalEngine(warehouse_dir=tmp_path / f"wh{len(list(tmp_path.iterdir()))}")
    for name, rows in (("t", target), ("s", source)):
        values = ", ".join(f"({'NULL' if k is None else k}, {v})" for k, v in rows) or "(0, 0)"
        keep = "" if rows else " WHERE false"
        eng.execute(
            f"CREATE TABLE main.x.{name} AS SELECT CAST(k AS INT) AS k, CAST(v AS INT) AS v "
            f"FROM VALUES {values} AS v(k, v){keep}"
        )
    merge = (
        "MERGE INTO main.x.t AS target USING main.x.s AS answers ON target.k = answers.k "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )
    matches = {
        i: [s for s in source if s[0] is not None and s[0] == t[0]] for i, t in enumerate(target)
    }
    if any(len(m) > 1 for m in matches.values()):
        with pytest.raises(EngineError, match="DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW"):
            eng.execute(merge)
        return
    expected = [m[0] if m else t for t, m in zip(target, matches.values(), strict=True)]
    expected += [s for s in source if s[0] is None or s[0] not in {t[0] for t in target}]
    eng.execute(merge)
    written = [(r["k"], r["v"]) for r in eng.read_table("main.x.t").to_pylist()]
    assert sorted(written, key=repr) == sorted(expected, key=repr)


def test_a_read_spills_before_any_warehouse_folder_exists(tmp_path: Path) -> None:
    """A dry run over mapped files may be the first thing run on a machine: with no warehouse
    folder yet, a query larger than memory_limit still spills (to a private folder removed at
    close), and the run creates no warehouse folder."""
    rows = 400_000
    source = tmp_path / "big.parquet"
    pq.write_table(
        pa.table({"id": range(rows), "text": [f"{i:08d}" * 16 for i in range(rows)]}), source
    )
    warehouse = tmp_path / "never" / "warehouse"
    eng = LocalEngine(
        {"memory_limit": "64MB"}, tables={"main.s.big": source}, warehouse_dir=warehouse
    )
    try:
        ordered = pa.Table.from_batches(
            list(eng.fetch_batches("SELECT id, text FROM main.s.big ORDER BY text DESC"))
        )
    finally:
        eng.close()
    assert ordered.num_rows == rows
    assert ordered.column("id")[0].as_py() == rows - 1
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("source", [None, [1, 2], 5, pd.DataFrame()], ids=repr)
def test_a_source_that_is_no_table_is_a_usage_error(tmp_path: Path, source: object) -> None:
    """The Python API passed them to DuckDB, which raised its own TypeError or input error."""
    with pytest.raises(
        UsageError, match=r"tables\['main.s.tickets'\]: cannot read a \w+ as a table"
    ):
        LocalEngine(tables={"main.s.tickets": source}, warehouse_dir=tmp_path / "wh")
