"""What a mapped output file may be. A job's output is read back by the next run, so it must keep
its column types (Parquet, Delta); a file that cannot be, or is not, an agentbatch output table is
a one-line error naming it before any call; an empty file holds no rows and is simply written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.engines.local import LocalEngine
from agentbatch.errors import EngineError, UsageError
from agentbatch.testing.agent_server import AgentServer, serve_agent

JOB = """\
name: t
source: {table: main.s.src, key: id, columns: [txt]}
request: "concat('Q: ', txt)"
agent: {endpoint: apps/a}
output: {table: main.s.out}
"""


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def run(tmp_path: Path, agent: AgentServer, source: Path, output: Path) -> dict[str, object]:
    job = tmp_path / "job.yml"
    job.write_text(JOB)
    with agentbatch.run(
        job,
        tables={"main.s.src": source, "main.s.out": output},
        endpoints={"apps/a": agent.url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        progress=False,
    ) as result:
        return dict(result.summary)


def csv_source(tmp_path: Path) -> Path:
    path = tmp_path / "src.csv"
    path.write_text("id,txt\n1,a\n2,b\n")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_job_output_is_not_a_csv_or_json_file(
    tmp_path: Path, agent: AgentServer, suffix: str
) -> None:
    """Read back, a text key "1" would come back as a number, a typed answer as text: refused
    before any call, on the first run already."""
    source = tmp_path / "src.json"
    source.write_text('{"id": "1", "txt": "a"}\n{"id": "2", "txt": "b"}\n')
    output = tmp_path / f"out{suffix}"
    with pytest.raises(UsageError) as raised:
        run(tmp_path, agent, source, output)
    message = str(raised.value)
    assert f"--table main.s.out={output}: a job's output cannot be a {suffix} file" in message
    assert "map the output to a .parquet file or a Delta folder" in message
    assert "\n" not in message
    assert agent.stats().requests_total == 0
    assert not output.exists()


def test_a_table_written_whole_may_go_to_a_csv_file(tmp_path: Path) -> None:
    """Scores and metrics are replaced whole, never read back: a CSV (for a spreadsheet) is fine."""
    scores = tmp_path / "scores.csv"
    scores.write_text("whatever,was,here\n1,2,3\n")
    engine = LocalEngine(
        tables={"main.s.scores": scores}, warehouse_dir=tmp_path, output_tables=["main.s.scores"]
    )
    try:
        engine.execute("CREATE OR REPLACE TABLE main.s.scores AS SELECT '01' AS id, 0.5 AS score")
        assert engine.read_table("main.s.scores").to_pylist() == [{"id": "01", "score": 0.5}]
    finally:
        engine.close()
    assert scores.read_text().splitlines() == ["id,score", "01,0.5"]


def test_an_empty_output_file_is_a_file_still_to_be_written(
    tmp_path: Path, agent: AgentServer
) -> None:
    output = tmp_path / "out.parquet"
    output.touch()  # 0 bytes: no rows to keep
    summary = run(tmp_path, agent, csv_source(tmp_path), output)
    assert summary["table_rows"] == 2
    assert sorted(pq.read_table(output)["id"].to_pylist()) == [1, 2]


def test_an_unreadable_output_file_is_named_before_any_call(
    tmp_path: Path, agent: AgentServer
) -> None:
    output = tmp_path / "out.parquet"
    output.write_text("id,txt\n1,a\n")  # not Parquet
    with pytest.raises(
        UsageError, match=r"^--table main\.s\.out=.*out\.parquet: cannot read the output file: "
    ):
        run(tmp_path, agent, csv_source(tmp_path), output)
    assert agent.stats().requests_total == 0
    assert output.read_text() == "id,txt\n1,a\n"


def test_an_unrelated_table_is_not_taken_for_an_output(tmp_path: Path, agent: AgentServer) -> None:
    output = tmp_path / "out.parquet"
    pq.write_table(pa.table({"id": [1], "price": [9.5]}), output)
    with pytest.raises(UsageError) as raised:
        run(tmp_path, agent, csv_source(tmp_path), output)
    assert str(raised.value) == (
        f"--table main.s.out={output}: the file is not an agentbatch output table (it has no "
        "request_fingerprint column); map the output to a new file"
    )
    assert agent.stats().requests_total == 0
    assert pq.read_table(output).to_pylist() == [{"id": 1, "price": 9.5}]


def test_a_folder_that_is_not_a_delta_table_is_refused(tmp_path: Path, agent: AgentServer) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="the folder is not a Delta table"):
        run(tmp_path, agent, csv_source(tmp_path), folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert agent.stats().requests_total == 0


def test_an_unknown_output_type_is_refused(tmp_path: Path, agent: AgentServer) -> None:
    output = tmp_path / "out" / "x.xlsx"
    with pytest.raises(UsageError, match=r"x\.xlsx: unsupported output type"):
        run(tmp_path, agent, csv_source(tmp_path), output)
    assert not output.exists()
    assert agent.stats().requests_total == 0


HOLD_OUTPUT = """\
import sys
from agentbatch.engines.local import LocalEngine
engine = LocalEngine(
    {"job_name": "first", "run_id": "r1"}, tables={"main.s.out": sys.argv[1]},
    warehouse_dir=sys.argv[2], output_tables=["main.s.out"],
)
print("ready", flush=True)
sys.stdin.read()
"""


def open_output(tmp_path: Path, output: Path) -> LocalEngine:
    return LocalEngine(
        tables={"main.s.out": output}, warehouse_dir=tmp_path, output_tables=["main.s.out"]
    )


def test_an_output_is_locked_while_another_process_writes_it(tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, str(output), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        with pytest.raises(EngineError) as raised:
            open_output(tmp_path, output)
    finally:
        holder.communicate(b"", timeout=30)
    message = str(raised.value)
    assert message.startswith(
        f"local engine: {output} is being written by another run (pid {holder.pid}, "
        "job first, run r1, since "
    )
    assert message.endswith("wait for it to finish, or map this run's output to another file")
    open_output(tmp_path, output).close()  # released when the holder ended


def test_engines_of_one_process_share_the_lock(tmp_path: Path) -> None:
    """A Python session runs a job again while the last run's result is still open."""
    output = tmp_path / "out.parquet"
    first = open_output(tmp_path, output)
    second = open_output(tmp_path, output)
    first.close()
    second.close()
    second.close()  # closing twice releases once
    probe = subprocess.run(
        [sys.executable, "-c", HOLD_OUTPUT, str(output), str(tmp_path)],
        input=b"", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr.decode()


def test_a_warehouse_file_held_by_another_program_is_a_one_line_error(tmp_path: Path) -> None:
    warehouse = tmp_path / "wh"
    warehouse.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]);"
            " con.execute('CREATE SCHEMA IF NOT EXISTS s; CREATE TABLE IF NOT EXISTS s.t (i INT)');"
            " print('ready', flush=True); sys.stdin.read()",
            str(warehouse / "main.duckdb"),
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        engine = LocalEngine(warehouse_dir=warehouse)
        with pytest.raises(EngineError) as raised:
            engine.table_exists("main.s.t")
        engine.close()
    finally:
        holder.communicate(b"", timeout=30)
    assert str(raised.value) == (
        f"local engine: the local warehouse file {warehouse / 'main.duckdb'} is in use by "
        f"process {holder.pid} (another run, or a program that has it open); wait for it to finish"
    )


def test_a_delta_output_gains_a_version_only_when_a_run_changes_it(
    tmp_path: Path, agent: AgentServer
) -> None:
    """Each Delta version is a whole copy of the table, kept for time travel: a scheduled rerun
    with nothing to answer adds none (it added one, from the target's CREATE IF NOT EXISTS, every
    run), a run with new answers adds one."""
    from deltalake import DeltaTable

    source, output = csv_source(tmp_path), tmp_path / "out_delta"
    run(tmp_path, agent, source, output)
    first = DeltaTable(str(output)).version()
    run(tmp_path, agent, source, output)
    run(tmp_path, agent, source, output)
    assert DeltaTable(str(output)).version() == first
    source.write_text("id,txt\n1,a\n2,b\n3,c\n")
    assert run(tmp_path, agent, source, output)["sent"] == 1
    table = DeltaTable(str(output))
    assert table.version() == first + 1
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == [1, 2, 3]


def test_a_create_if_not_exists_is_known_by_its_parsed_statement(tmp_path: Path) -> None:
    """A comment ahead of CREATE TABLE IF NOT EXISTS (which the statement's first words do not
    show) still leaves an existing Delta output as it is: no new version."""
    from deltalake import DeltaTable, write_deltalake

    output = tmp_path / "out_delta"
    write_deltalake(str(output), pa.table({"id": [1], "request_fingerprint": ["f"]}))
    eng = LocalEngine(
        tables={"main.s.out": output}, warehouse_dir=tmp_path / "wh", output_tables=["main.s.out"]
    )
    try:
        eng.execute(
            "-- the target, when it is missing\n"
            "CREATE TABLE IF NOT EXISTS main.s.out AS SELECT 2 AS id, 'g' AS request_fingerprint"
        )
    finally:
        eng.close()
    assert DeltaTable(str(output)).version() == 0


@pytest.mark.parametrize("partitioned", [False, True], ids=["plain", "partitioned"])
def test_a_delta_source_is_read_as_its_current_version(tmp_path: Path, partitioned: bool) -> None:
    """The files of the current version only (an overwritten version's files stay on disk), and a
    partition column's values, which live in the log, not in the files."""
    from deltalake import write_deltalake

    source = tmp_path / "src_delta"
    by = ["region"] if partitioned else None
    old = pa.table({"id": [1, 2], "txt": ["old", "old"], "region": ["eu", "us"]})
    new = pa.table({"id": [2, 3, 4], "txt": ["b", "c", "d"], "region": ["eu", "us", "us"]})
    write_deltalake(str(source), old, partition_by=by)
    write_deltalake(str(source), new, partition_by=by, mode="overwrite")
    eng = LocalEngine(tables={"main.s.src": source}, warehouse_dir=tmp_path / "wh")
    rows = pa.Table.from_batches(list(eng.fetch_batches("SELECT * FROM main.s.src"))).to_pylist()
    assert sorted((r["id"], r["txt"], r["region"]) for r in rows) == [
        (2, "b", "eu"),
        (3, "c", "us"),
        (4, "d", "us"),
    ]


@pytest.mark.parametrize("output_name", ["out.parquet", "out_delta"])
def test_keys_past_bigint_keep_every_digit(
    tmp_path: Path, agent: AgentServer, output_name: str
) -> None:
    """A CSV key past BIGINT reads as HUGEINT, which DuckDB wrote to Parquet as DOUBLE: two keys
    became one `1.2345678901234568e+22`, and the next run was refused (HUGEINT against DOUBLE).
    They are written as DECIMAL(38,0), and the next run finds them answered."""
    source = tmp_path / "src.csv"
    keys = [12345678901234567890123, 12345678901234567890124]
    source.write_text("id,txt\n" + "".join(f"{k},t{k}\n" for k in keys))
    output = tmp_path / output_name
    first = run(tmp_path, agent, source, output)
    assert (first["sent"], first["table_rows"]) == (2, 2)
    again = run(tmp_path, agent, source, output)
    assert (again["sent"], again["skipped"]) == (0, 2)
    read = agentbatch.read_table("main.s.out", tables={"main.s.out": output})
    assert sorted(int(k) for k in read.column("id").to_pylist()) == keys


@pytest.mark.parametrize("into", ["file", "warehouse"])
def test_categorical_columns_are_text_run_after_run(
    tmp_path: Path, agent: AgentServer, into: str
) -> None:
    """pandas Categorical columns read as DuckDB ENUMs: the same frame run again was refused (a
    key of another type), and in the local warehouse the output took the ENUM, so a new category
    later was paid for, then could not be written, run after run."""
    import pandas as pd

    def frame(keys: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"id": pd.Categorical(keys), "txt": pd.Categorical(keys)})

    job = tmp_path / "job.yml"
    job.write_text(JOB)

    def run_on(source: pd.DataFrame) -> dict[str, object]:
        tables = {"main.s.src": source}
        if into == "file":
            tables["main.s.out"] = tmp_path / "out.parquet"
        with agentbatch.run(
            job,
            tables=tables,
            endpoints={"apps/a": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            progress=False,
        ) as result:
            return dict(result.summary)

    assert run_on(frame(["a", "b"]))["sent"] == 2
    again = run_on(frame(["a", "b"]))
    assert (again["sent"], again["skipped"]) == (0, 2)
    grown = run_on(frame(["a", "b", "c"]))
    assert (grown["sent"], grown["table_rows"]) == (1, 3)


@pytest.mark.parametrize("kind", ["frame", "parquet"])
def test_a_source_with_no_rows_yet_leaves_an_output_the_next_run_can_write(
    tmp_path: Path, agent: AgentServer, kind: str
) -> None:
    """A source with no rows has columns of no type (pandas' empty object column, Parquet's
    null): the output made from them had a column no value fits, and the next run with rows
    paid for them, then failed to write them, run after run. Such columns are text."""
    import pandas as pd

    def source(ids: list[int]) -> object:
        frame = pd.DataFrame(
            {
                "id": pd.Series(ids, dtype="int64"),
                "txt": pd.Series([f"t{i}" for i in ids], dtype=object),
            }
        )
        if kind == "frame":
            return frame
        path = tmp_path / f"src{len(ids)}.parquet"
        frame.to_parquet(path)
        return path

    output = tmp_path / "out.parquet"
    assert run(tmp_path, agent, source([]), output)["table_rows"] == 0  # type: ignore[arg-type]
    filled = run(tmp_path, agent, source([1, 2]), output)  # type: ignore[arg-type]
    assert (filled["sent"], filled["table_rows"]) == (2, 2)
    assert pq.read_table(output).column("txt").to_pylist() in (["t1", "t2"], ["t2", "t1"])


def test_a_key_spelt_in_another_case_than_the_sources_column(
    tmp_path: Path, agent: AgentServer
) -> None:
    """`key: id` over a CSV whose header says `ID`: SQL matches names without case, but the
    rows came back spelt as the source spells them, so the run stopped (the key missing from
    its rows) after creating an empty output. The output is spelt as the job spells it."""
    source = tmp_path / "src.csv"
    source.write_text("ID,Txt\n1,a\n2,b\n")
    output = tmp_path / "out.parquet"
    assert run(tmp_path, agent, source, output)["sent"] == 2
    assert pq.read_table(output).schema.names[:2] == ["id", "txt"]
    again = run(tmp_path, agent, source, output)
    assert (again["sent"], again["skipped"]) == (0, 2)
