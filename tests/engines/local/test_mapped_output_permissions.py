"""An output in a folder this user may not write: a mapped file or Delta folder, or the local
warehouse's folder. The run stops before any call with one line naming it and what to do (exit
3, no traceback), the output left as it was; once the folder can be written, the next run
writes every row.

Root writes anywhere, so as root each run drops the capabilities that let it ignore a file's
permissions (`setpriv`, util-linux): the folders' modes then apply to it as to any user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from tests.engines.local.test_mapped_output_errors import KEPT, csv_source, delta_rows, job
from tests.support.databricks_env import isolated_env

# The capabilities that let root read, write and chmod whatever the modes say.
AS_A_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
DENIED = (
    "cannot write the output: Permission denied; map the output to a folder this user can write"
)


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


@pytest.fixture
def read_only() -> Iterator[list[Path]]:
    """Folders made read-only by a test, writable again after it (so they can be removed)."""
    folders: list[Path] = []
    yield folders
    for folder in folders:
        folder.chmod(0o755)


def as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.fail("running as root without setpriv (util-linux): modes cannot be tested")
    return AS_A_USER


def cli(
    root: Path, agent: AgentServer, source: Path, output: Path | None
) -> subprocess.CompletedProcess[str]:
    """`agentbatch run`; with no `output`, the output is kept in the local warehouse."""
    mapped = [] if output is None else ["--table", f"main.s.out={output}"]
    args = [
        *as_user(), sys.executable, "-m", "agentbatch", "run", str(job(root)), "--no-progress",
        "--json", "--table", f"main.s.src={source}", *mapped,
        "--endpoint", f"apps/a={agent.url}",
        "--state-dir", str(root / "state"), "--project-dir", str(root),
    ]  # fmt: skip
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, env=isolated_env(root), check=False
    )


def refused(done: subprocess.CompletedProcess[str], output: Path) -> str:
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if f"main.s.out={output}" in x]
    return line


def summary(done: subprocess.CompletedProcess[str]) -> tuple[int, int, int]:
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["summary"]
    return found["sent"], found["reused"], found["table_rows"]


@pytest.mark.parametrize("name", ["out.parquet", "out_delta"])
def test_a_read_only_folder_is_named_and_the_next_run_pays_nothing_again(
    tmp_path: Path, agent: AgentServer, read_only: list[Path], name: str
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    output = folder / name
    source = csv_source(tmp_path, {1: "a", 2: "b"})
    folder.chmod(0o555)
    read_only.append(folder)

    line = refused(cli(tmp_path, agent, source, output), output)
    assert line == f"--table main.s.out={output}: {DENIED} {KEPT}"
    assert sorted(folder.iterdir()) == []
    assert agent.stats().requests_total == 0  # found before any call

    folder.chmod(0o755)
    assert summary(cli(tmp_path, agent, source, output)) == (2, 0, 2)
    assert agent.stats().requests_total == 2


@pytest.mark.parametrize("name", ["out.parquet", "out_delta"])
def test_an_output_that_cannot_be_replaced_is_left_as_it_was(
    tmp_path: Path, agent: AgentServer, read_only: list[Path], name: str
) -> None:
    """The lock file an earlier run left beside it can still be opened: the folder is tried
    with a new file before any call. Before, the run paid for the new row, then its save was
    refused."""
    folder = tmp_path / "shared"
    folder.mkdir()
    output = folder / name
    assert summary(cli(tmp_path, agent, csv_source(tmp_path, {1: "a", 2: "b"}), output))[0] == 2

    def content() -> object:
        return output.read_bytes() if output.is_file() else delta_rows(output)

    before = content()
    locked = [folder, *([output, output / "_delta_log"] if output.is_dir() else [])]
    for each in locked:
        each.chmod(0o555)
    read_only.extend(locked)
    source = csv_source(tmp_path, {1: "a", 2: "b", 3: "c"})

    line = refused(cli(tmp_path, agent, source, output), output)
    assert line == f"--table main.s.out={output}: {DENIED} {KEPT}"
    assert content() == before
    assert agent.stats().requests_total == 2  # the first run's two rows only

    for each in locked:
        each.chmod(0o755)
    assert summary(cli(tmp_path, agent, source, output)) == (1, 0, 3)
    assert agent.stats().requests_total == 3
    rows = pq.read_table(output) if output.is_file() else None
    if rows is not None:
        assert sorted(rows.column("id").to_pylist()) == [1, 2, 3]
    else:
        assert delta_rows(output)[1] == [1, 2, 3]


def test_a_read_only_local_warehouse_folder_is_named_before_any_call(
    tmp_path: Path, agent: AgentServer, read_only: list[Path]
) -> None:
    """An output kept in the local warehouse (no mapping): DuckDB makes its write-ahead log
    beside the warehouse file when it commits, so a folder that takes no new file failed the
    write after the calls, with DuckDB's error (`Cannot open file ".../main.duckdb.wal"`)."""
    source = csv_source(tmp_path, {1: "a", 2: "b"})
    assert summary(cli(tmp_path, agent, source, None)) == (2, 0, 2)
    warehouse = tmp_path / ".agentbatch" / "warehouse"
    warehouse.chmod(0o555)
    read_only.append(warehouse)
    source = csv_source(tmp_path, {1: "a", 2: "b", 3: "c"})

    done = cli(tmp_path, agent, source, None)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"local engine: cannot write in the local warehouse folder {warehouse}: Permission "
        "denied; give this user write access to it (the local target keeps its tables there)"
    )
    assert agent.stats().requests_total == 2

    warehouse.chmod(0o755)
    assert summary(cli(tmp_path, agent, source, None)) == (1, 0, 3)
