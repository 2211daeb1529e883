"""What a local engine leaves behind: nothing. Its private spill folder (no warehouse folder yet)
goes at close, or when an engine never closed is collected; a close that fails still removes it
and releases the outputs it locked (the process, a notebook or a scheduler, lives on)."""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agentbatch.engines.local import LocalEngine
from tests.engines.local.test_mapped_outputs import HOLD_OUTPUT


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def spill_folders(root: Path) -> list[Path]:
    return sorted(root.glob("agentbatch-spill-*"))


def engine_without_warehouse(tmp_path: Path, **kwargs: object) -> LocalEngine:
    return LocalEngine(warehouse_dir=tmp_path / "no-warehouse-yet", **kwargs)  # type: ignore[arg-type]


def test_the_private_spill_folder_goes_at_close(tmp_path: Path, temp_root: Path) -> None:
    engine = engine_without_warehouse(tmp_path)
    assert len(spill_folders(temp_root)) == 1
    engine.close()
    assert spill_folders(temp_root) == []


def test_an_engine_never_closed_leaves_no_spill_folder(tmp_path: Path, temp_root: Path) -> None:
    engine = engine_without_warehouse(tmp_path)
    assert engine.fetch_one("SELECT 1 AS one") == {"one": 1}
    assert len(spill_folders(temp_root)) == 1
    del engine
    gc.collect()
    assert spill_folders(temp_root) == []


def test_a_close_that_fails_still_releases_the_output_and_removes_the_spill_folder(
    tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out.parquet"
    engine = engine_without_warehouse(
        tmp_path, tables={"main.s.out": output}, output_tables=["main.s.out"]
    )

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
