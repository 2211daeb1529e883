"""What a local engine leaves behind: nothing. With no warehouse folder yet, DuckDB spills to a
private folder in the temporary folder, made only when it spills: it goes at close, or when an
engine never closed is collected, and a run killed before it spilled leaves none. A close that
fails still removes it and releases the outputs it locked (the process, a notebook or a
scheduler, lives on)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentbatch.engines.local import LocalEngine
from tests.engines.local.test_mapped_outputs import HOLD_OUTPUT

ROWS = 400_000


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table that does not fit the engines' 64MB when sorted."""
    path = tmp_path_factory.mktemp("big") / "big.parquet"
    rows = {"id": range(ROWS), "text": [f"{i:08d}" * 16 for i in range(ROWS)]}
    pq.write_table(pa.table(rows), path)
    return path


def spill_folders(root: Path) -> list[Path]:
    return sorted(root.glob("agentbatch-spill-*"))


def engine_without_warehouse(tmp_path: Path, big: Path, **kwargs: object) -> LocalEngine:
    tables = {"main.s.big": big, **kwargs.pop("tables", {})}  # type: ignore[dict-item]
    return LocalEngine(
        {"memory_limit": "64MB"},
        tables=tables,  # type: ignore[arg-type]
        warehouse_dir=tmp_path / "no-warehouse-yet",
        **kwargs,  # type: ignore[arg-type]
    )


def spill(engine: LocalEngine) -> None:
    sorted_rows = engine.fetch_batches("SELECT id, text FROM main.s.big ORDER BY text DESC")
    assert sum(batch.num_rows for batch in sorted_rows) == ROWS


def test_the_spill_folder_is_made_when_needed_and_goes_at_close(
    tmp_path: Path, temp_root: Path, big: Path
) -> None:
    engine = engine_without_warehouse(tmp_path, big)
    assert engine.fetch_one("SELECT count(*) AS n FROM main.s.big") == {"n": ROWS}
    assert spill_folders(temp_root) == []  # nothing spilled yet
    spill(engine)
    assert len(spill_folders(temp_root)) == 1
    engine.close()
    assert spill_folders(temp_root) == []
    assert not (tmp_path / "no-warehouse-yet").exists()


def test_an_engine_never_closed_leaves_no_spill_folder(
    tmp_path: Path, temp_root: Path, big: Path
) -> None:
    engine = engine_without_warehouse(tmp_path, big)
    spill(engine)
    assert len(spill_folders(temp_root)) == 1
    del engine
    gc.collect()
    assert spill_folders(temp_root) == []


KILLED_BEFORE_SPILLING = """\
import os, signal, sys
from agentbatch.engines.local import LocalEngine
engine = LocalEngine(warehouse_dir=sys.argv[1])
engine.fetch_one("SELECT 1 AS one")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_killed_before_it_spilled_leaves_nothing(tmp_path: Path, temp_root: Path) -> None:
    """Before, every engine opened without a warehouse folder made its folder at once: a test
    run's killed processes left dozens of them in the temporary folder."""
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_SPILLING, str(tmp_path / "no-warehouse-yet")],
        env={**os.environ, "TMPDIR": str(temp_root)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    assert list(temp_root.iterdir()) == []


def test_a_close_that_fails_still_releases_the_output_and_removes_the_spill_folder(
    tmp_path: Path, temp_root: Path, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out.parquet"
    engine = engine_without_warehouse(
        tmp_path, big, tables={"main.s.out": output}, output_tables=["main.s.out"]
    )
    spill(engine)

    def disk_error(self: LocalEngine) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalEngine, "_drop_guessed_outputs", disk_error)
    with pytest.raises(OSError, match="No space left"):
        engine.close()
    assert spill_folders(temp_root) == []
    # Another process may write the output now: this one no longer holds its lock.
    probe = subprocess.run(
        [sys.executable, "-c", HOLD_OUTPUT, str(output), str(tmp_path / "wh")],
        input=b"", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr.decode()
