"""A mapped output that cannot be written. Before any call, the run stops with one line naming
the mapping (`--table NAME=PATH`) and what to do; after the calls were paid for (a disk that
fills up, a folder in the way), it stops the same way, leaves the old output as it was (the save
is whole or nothing), and the next run with a path it can write saves every answer from the
checkpoint without sending one again. They were raw errors: `FileExistsError`, DuckDB's
`IOException` and deltalake's `DeltaError`, with a traceback."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import ConfigError, UsageError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from tests.support.databricks_env import isolated_env

JOB = """\
name: t
source: {table: main.s.src, key: id, columns: [txt]}
request: "concat('Q: ', substr(txt, 1, 20))"
agent: {endpoint: apps/a}
output: {table: main.s.out}
"""
KEPT = (
    "(the answers already received are kept: the next run writes them without sending them again)"
)
# A disk that fills up, without root: past RLIMIT_FSIZE bytes a write fails with EFBIG, as one
# past a full disk fails with ENOSPC (SIGXFSZ ignored, or it would kill the process instead).
WITH_FILE_SIZE_LIMIT = """\
import os, resource, signal, sys
size = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def job(root: Path) -> Path:
    path = root / "jobs" / "t.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(JOB)
    return path


def run(
    root: Path,
    agent: AgentServer,
    source: Path,
    output: Path,
    *,
    state: str = "state",
    job_text: str = JOB,
) -> dict[str, Any]:
    path = job(root)
    path.write_text(job_text)
    with agentbatch.run(
        path,
        tables={"main.s.src": source, "main.s.out": output},
        endpoints={"apps/a": agent.url},
        state_dir=root / state,
        project_dir=root,
        progress=False,
    ) as result:
        return dict(result.summary)


def cli(
    root: Path,
    agent: AgentServer,
    source: Path,
    output: Path,
    *,
    state: str = "state",
    file_size_limit: int | None = None,
) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable, "-m", "agentbatch", "run", str(job(root)), "--no-progress", "--json",
        "--table", f"main.s.src={source}", "--table", f"main.s.out={output}",
        "--endpoint", f"apps/a={agent.url}",
        "--state-dir", str(root / state), "--project-dir", str(root),
    ]  # fmt: skip
    if file_size_limit is not None:
        args = [sys.executable, "-c", WITH_FILE_SIZE_LIMIT, str(file_size_limit), *args]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, env=isolated_env(root), check=False
    )


def the_error(done: subprocess.CompletedProcess[str], output: Path, exit_code: int) -> str:
    """The one line naming the mapping, with no traceback."""
    assert done.returncode == exit_code, done.stderr
    assert "Traceback" not in done.stderr
    named = [line for line in done.stderr.splitlines() if f"main.s.out={output}" in line]
    assert len(named) == 1, done.stderr
    return named[0]


def csv_source(root: Path, rows: dict[int, str]) -> Path:
    path = root / "src.csv"
    path.write_text("id,txt\n" + "".join(f"{key},{text}\n" for key, text in rows.items()))
    return path


def delta_rows(path: Path) -> tuple[int, list[int]]:
    from deltalake import DeltaTable

    table = DeltaTable(str(path))
    return table.version(), sorted(table.to_pyarrow_table().column("id").to_pylist())


@pytest.mark.parametrize("name", ["out.parquet", "out_delta"])
def test_a_disk_full_after_the_calls_keeps_the_old_output_and_loses_no_answer(
    tmp_path: Path, agent: AgentServer, name: str
) -> None:
    output = tmp_path / name
    # Five wide rows (about 100 kB each): the output, not the checkpoint, passes the limit.
    wide = {key: os.urandom(50_000).hex() for key in range(1, 6)}
    source = csv_source(tmp_path, wide)
    assert cli(tmp_path, agent, source, output, state="first").returncode == 0
    before = output.read_bytes() if output.is_file() else delta_rows(output)
    source = csv_source(tmp_path, {**wide, 6: "new"})

    # A fresh checkpoint, so that only the output grows past the limit.
    full = cli(tmp_path, agent, source, output, state="second", file_size_limit=250_000)
    assert the_error(full, output, exit_code=3) == (
        f"--table main.s.out={output}: cannot write the output: {os.strerror(errno.EFBIG)}; free some "
        f"space, or map the output to another disk {KEPT}"
    )
    paid = agent.stats().requests_total
    assert paid == 6  # five by the first run, the new row by this one
    assert (output.read_bytes() if output.is_file() else delta_rows(output)) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}")) == [
        f".{name}.lock"  # no half-written file beside the output
    ]

    again = cli(tmp_path, agent, source, output, state="second")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)["summary"]
    assert (summary["sent"], summary["reused"], summary["table_rows"]) == (0, 1, 6)
    assert agent.stats().requests_total == paid


def test_a_folder_in_the_way_of_the_new_file_keeps_the_old_one(
    tmp_path: Path, agent: AgentServer
) -> None:
    """The Parquet file is written beside the output, then moved over it: a folder that holds
    that place makes the save fail after the calls, as a full disk does."""
    output = tmp_path / "out.parquet"
    run(tmp_path, agent, csv_source(tmp_path, {1: "a", 2: "b"}), output)
    before = output.read_bytes()
    source = csv_source(tmp_path, {1: "a", 2: "b", 3: "c"})
    in_the_way = tmp_path / ".out.parquet.tmp"
    in_the_way.mkdir()
    with pytest.raises(ConfigError) as raised:
        run(tmp_path, agent, source, output)
    message = str(raised.value)
    assert message.startswith(f"--table main.s.out={output}: cannot write the output: ")
    assert message.endswith(f"; map the output to a path that can be written {KEPT}")
    assert "\n" not in message
    assert agent.stats().requests_total == 3
    assert output.read_bytes() == before

    in_the_way.rmdir()
    summary = run(tmp_path, agent, source, output)
    assert (summary["sent"], summary["reused"], summary["table_rows"]) == (0, 1, 3)
    assert sorted(pq.read_table(output).column("id").to_pylist()) == [1, 2, 3]


@pytest.mark.parametrize("under", ["out.parquet", "deeper/out_delta"])
def test_an_output_under_a_file_is_named_before_any_call(
    tmp_path: Path, agent: AgentServer, under: str
) -> None:
    blocker = tmp_path / "notes"
    blocker.write_text("mine")
    output = blocker / under
    expected = (
        f"--table main.s.out={output}: cannot write the output there: {blocker} is a file, not "
        "a folder; map the output to a path in a folder"
    )
    source = csv_source(tmp_path, {1: "a"})
    assert the_error(cli(tmp_path, agent, source, output), output, exit_code=3) == expected
    with pytest.raises(ConfigError) as raised:
        run(tmp_path, agent, source, output)
    assert str(raised.value) == expected
    assert agent.stats().requests_total == 0
    assert blocker.read_text() == "mine"


def test_a_file_where_the_delta_folder_goes_is_named(tmp_path: Path, agent: AgentServer) -> None:
    """A path without an extension is a Delta folder; a file there was refused as an
    "unsupported output type", which told the user to use a path without an extension."""
    output = tmp_path / "out"
    output.write_text("mine")
    with pytest.raises(UsageError) as raised:
        run(tmp_path, agent, csv_source(tmp_path, {1: "a"}), output)
    assert str(raised.value) == (
        f"--table main.s.out={output}: the path is a file, and an output without an extension "
        "is a Delta folder; map the output to a .parquet file or a new folder"
    )
    assert agent.stats().requests_total == 0


def test_a_damaged_delta_log_is_named_and_a_new_folder_gets_every_answer(
    tmp_path: Path, agent: AgentServer
) -> None:
    output = tmp_path / "out_delta"
    source = csv_source(tmp_path, {1: "a", 2: "b"})
    run(tmp_path, agent, source, output)
    latest = sorted((output / "_delta_log").glob("*.json"))[-1]
    latest.write_text("garbage\n")
    mapping = f"--table main.s.out={output}"

    with pytest.raises(UsageError) as raised:
        run(tmp_path, agent, source, output)
    message = str(raised.value)
    assert message.startswith(f"{mapping}: cannot read the output file: ")
    assert message.endswith(f"; repair it, or map the output to a new path {KEPT}")
    # `agentbatch show` reads it the same way (a deltalake traceback before).
    with pytest.raises(UsageError, match=f"^{mapping}: cannot read the Delta table: "):
        agentbatch.read_table("main.s.out", tables={"main.s.out": output})
    assert agent.stats().requests_total == 2

    summary = run(tmp_path, agent, source, tmp_path / "new_delta")
    assert (summary["sent"], summary["reused"], summary["table_rows"]) == (0, 2, 2)
    assert delta_rows(tmp_path / "new_delta")[1] == [1, 2]


def test_a_column_delta_has_no_type_for_is_named_before_any_call(
    tmp_path: Path, agent: AgentServer
) -> None:
    """A CSV column of times of day is TIME, which Delta has no type for: deltalake's error
    named the type only ("Invalid data type for Delta Lake: Time64(µs)") and the message said to
    map the output to a path that can be written."""
    source = tmp_path / "src.csv"
    source.write_text("id,txt,at\n1,a,10:00:00\n")
    path = job(tmp_path)
    path.write_text(JOB.replace("columns: [txt]", "columns: [txt, at]"))
    output = tmp_path / "out"
    with pytest.raises(ConfigError) as raised:
        agentbatch.run(
            path,
            tables={"main.s.src": source, "main.s.out": output},
            endpoints={"apps/a": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            progress=False,
        )
    assert str(raised.value) == (
        f"--table main.s.out={output}: a Delta table cannot hold the column(s) at (time64[us]): "
        "cast them in `source.query` (a time of day to STRING, for one), or map the output to a "
        "Parquet file"
    )
    assert agent.stats().requests_total == 0
    assert not output.exists()


def refused_before_any_call(
    root: Path, agent: AgentServer, job_text: str, source: Path, output: Path
) -> str:
    """The UsageError's message of a run that sent nothing and created no output."""
    with pytest.raises(UsageError) as raised:
        run(root, agent, source, output, job_text=job_text)
    assert agent.stats().requests_total == 0
    assert not output.exists()
    return str(raised.value)


def output_table(output: Path) -> Any:
    if output.is_dir():
        from deltalake import DeltaTable

        return DeltaTable(str(output)).to_pyarrow_table()
    return pq.read_table(output)


HUGE = 170141183460469231731687303715884105727  # 2**127 - 1: DuckDB reads it as HUGEINT


@pytest.mark.parametrize("output_name", ["out.parquet", "out"])
@pytest.mark.parametrize("in_key", [True, False], ids=["key", "passthrough"])
def test_an_integer_past_38_digits_is_refused_before_any_call(
    tmp_path: Path, agent: AgentServer, output_name: str, in_key: bool
) -> None:
    """A CSV integer of 39 digits is a HUGEINT, which Arrow's widest decimal (the checkpoint's
    form) cannot hold: the run paid every row, could not read its checkpoint back, wrote no
    row and exited 0; the answers were dropped from the checkpoint as unreadable."""
    source = tmp_path / "src.csv"
    column = "id" if in_key else "big"
    if in_key:
        source.write_text(f"id,txt\n1,a\n2,b\n{HUGE},c\n")
        job_text = JOB
    else:
        source.write_text(f"id,txt,big\n1,a,5\n2,b,{HUGE}\n3,c,7\n")
        job_text = JOB.replace("columns: [txt]", "columns: [txt, big]")
    output = tmp_path / output_name
    assert refused_before_any_call(tmp_path, agent, job_text, source, output) == (
        f"column {column!r} holds 1 integer(s) of 39 digits or more, which no output type holds "
        f"(DECIMAL(38, 0) is the widest): give it as text in `source.query` (CAST(`{column}` AS "
        "STRING)). Nothing was sent to the agent"
    )
    # The fix it names: every row answered once, the digits kept exactly.
    query = (
        "SELECT CAST(id AS STRING) AS id, txt FROM main.s.src"
        if in_key
        else "SELECT id, txt, CAST(big AS STRING) AS big FROM main.s.src"
    )
    fixed = job_text.replace("source: {table: main.s.src,", f'source: {{query: "{query}",')
    summary = run(tmp_path, agent, source, output, job_text=fixed)
    assert (summary["rows_written"], agent.stats().requests_total) == (3, 3)
    table = output_table(output)
    assert str(HUGE) in table.column(column).to_pylist()
    assert table.column("error").null_count == 3
    assert run(tmp_path, agent, source, output, job_text=fixed)["sent"] == 0


def test_an_unsigned_column_is_refused_before_any_call_into_delta(
    tmp_path: Path, agent: AgentServer
) -> None:
    """Delta's integers are signed: a UTINYINT column made the table TINYINT, and 200 failed
    the write after every call was paid (an unexpected error, exit 1, an empty table left)."""
    import pyarrow as pa

    source = tmp_path / "src.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [1, 2, 3],
                "txt": ["a", "b", "c"],
                "stars": pa.array([5, 1, 200], pa.uint8()),
            }
        ),
        source,
    )
    job_text = JOB.replace("columns: [txt]", "columns: [txt, stars]")
    output = tmp_path / "out"
    assert refused_before_any_call(tmp_path, agent, job_text, source, output) == (
        "column 'stars' is an unsigned integer (UTINYINT), which a Delta table cannot hold (its "
        "integers are signed): cast it in `source.query` (CAST(`stars` AS SMALLINT)), or map the "
        "output to a Parquet file. Nothing was sent to the agent"
    )
    # A Parquet file holds it as it is; the cast named holds it in Delta.
    parquet = tmp_path / "out.parquet"
    assert run(tmp_path, agent, source, parquet, job_text=job_text)["rows_written"] == 3
    assert sorted(output_table(parquet).column("stars").to_pylist()) == [1, 5, 200]
    query = "SELECT id, txt, CAST(stars AS SMALLINT) AS stars FROM main.s.src"
    fixed = job_text.replace("source: {table: main.s.src,", f'source: {{query: "{query}",')
    assert run(tmp_path, agent, source, output, job_text=fixed)["rows_written"] == 3
    assert sorted(output_table(output).column("stars").to_pylist()) == [1, 5, 200]


def test_a_nanosecond_key_is_refused_before_any_call_into_delta(
    tmp_path: Path, agent: AgentServer
) -> None:
    """Delta keeps microseconds: two keys 1 ns apart became one key held by two rows, and the
    next run of the unchanged job was refused (the table's key type is not the source's)."""
    import pyarrow as pa

    source = tmp_path / "src.parquet"
    keys = pa.array([1_704_067_200_000_000_000, 1_704_067_200_000_000_001], pa.timestamp("ns"))
    pq.write_table(pa.table({"id": keys, "txt": ["a", "b"]}), source)
    output = tmp_path / "out"
    assert refused_before_any_call(tmp_path, agent, JOB, source, output) == (
        "key 'id' is a timestamp in nanoseconds, which a Delta table keeps in microseconds (two "
        "keys could become one): give it as text in `source.query` (CAST(`id` AS STRING)), or "
        "map the output to a Parquet file. Nothing was sent to the agent"
    )
    # A Parquet file keeps both keys.
    parquet = tmp_path / "out.parquet"
    assert run(tmp_path, agent, source, parquet, job_text=JOB)["rows_written"] == 2
    assert output_table(parquet).column("id").to_pylist() == keys.to_pylist()
    assert run(tmp_path, agent, source, parquet, job_text=JOB)["sent"] == 0


@pytest.mark.parametrize("name", ["out.parquet", "out_delta"])
def test_an_output_mapped_through_a_link_is_written_where_it_points(
    tmp_path: Path, agent: AgentServer, name: str
) -> None:
    """A file output was saved by replacing the path given: the link became a file of its own,
    and the file it pointed at kept the old rows."""
    shared = tmp_path / "shared" / name
    shared.parent.mkdir()
    run(tmp_path, agent, csv_source(tmp_path, {1: "a", 2: "b"}), shared)
    link = tmp_path / name
    link.symlink_to(shared, target_is_directory=shared.is_dir())
    summary = run(tmp_path, agent, csv_source(tmp_path, {1: "a", 2: "b", 3: "c"}), link)
    assert (summary["sent"], summary["table_rows"]) == (1, 3)
    assert link.is_symlink()
    if shared.is_dir():
        assert delta_rows(shared)[1] == [1, 2, 3]
    else:
        assert sorted(pq.read_table(shared).column("id").to_pylist()) == [1, 2, 3]


def test_a_state_folder_that_cannot_be_made_is_named_before_any_call(
    tmp_path: Path, agent: AgentServer
) -> None:
    """The checkpoint's folder under a file: the CLI printed `Not a directory: <path>`, naming
    neither the checkpoint nor --state-dir, and the Python API raised the OSError itself."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    output = tmp_path / "out.parquet"
    done = cli(tmp_path, agent, csv_source(tmp_path, {1: "a"}), output, state="blocker/state")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot make the checkpoint " in done.stderr
    assert f"{os.strerror(errno.ENOTDIR)}." in done.stderr
    assert "set state_dir (--state-dir) to a local folder" in done.stderr
    assert agent.stats().requests_total == 0
    assert not output.exists()
