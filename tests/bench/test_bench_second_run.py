"""S4r, a scheduled job's second run: the harness on tiny sizes (the first run set-up, the second
with the request edited, each in its own process), and a failed run shown as failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import scale
from bench.__main__ import parse_args
from bench.clients.agentbatch_run import DELTA_FOLDER, OUTPUT_TABLE
from bench.clients.base import ClientConfig
from bench.measure import Measurement
from bench.report import second_run_section, targets_section
from bench.scale import SecondRuns, run_second_runs
from bench.targets import check_targets

OOM = (
    "exit code 1: duckdb.duckdb.OutOfMemoryException: Out of Memory Error: "
    "could not allocate block of size 256.0 KiB (256.0 MiB/256.0 MiB used)"
)


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.slow
def test_the_second_run_answers_and_replaces_every_row(tmp_path: Path) -> None:
    import agentbatch

    found = run_second_runs((300, 900), ("warehouse", "delta"), tmp_path, log=lambda _: None)
    assert [(r.output, r.rows) for r in found.runs] == [
        ("warehouse", 300),
        ("delta", 300),
        ("warehouse", 900),
        ("delta", 900),
    ]
    for run in found.runs:
        assert run.setup.error is None and run.second.error is None, run
        assert (run.setup.ok, run.second.ok, run.second.failed) == (run.rows, run.rows, 0)
        assert run.second.peak_rss_mb > 0
    assert {m.error for m in found.baselines.values()} == {None}
    # The Delta baseline imports deltalake as well: it is not the rows' cost.
    assert found.baselines["delta"].peak_rss_mb > found.baselines["warehouse"].peak_rss_mb

    # The output holds every row once, each answered to the edited request.
    for output, tables in (
        ("warehouse", None),
        ("delta", {OUTPUT_TABLE: str(tmp_path / "S4r-900" / "delta" / DELTA_FOLDER)}),
    ):
        workdir = tmp_path / "S4r-900" / output
        table = agentbatch.read_table(OUTPUT_TABLE, tables=tables, project_dir=workdir)
        assert table.num_rows == 900, output
        answers = table.column("response").to_pylist()
        assert all(a.startswith("echo: Edited: ") for a in answers), (output, answers[:3])
    assert (tmp_path / "S4r-900" / "delta" / DELTA_FOLDER / "_delta_log").is_dir()
    assert not (tmp_path / "S4r-900" / "warehouse" / DELTA_FOLDER).exists()

    text = second_run_section(found)
    rows = _table_rows(text)
    assert [(cells[0], cells[1]) for cells in rows] == [
        ("warehouse table", "300"),
        ("warehouse table", "900"),
        ("Delta folder", "300"),
        ("Delta folder", "900"),
    ]
    assert all(cells[-1] == "0" and int(cells[5]) >= 0 for cells in rows)
    assert "- warehouse table, 900 over 300 rows: " in text
    targets = targets_section(check_targets([], [], [], found))
    assert "| S4r (Delta folder): the second run replaces every row | 300/300, 900/900 | yes |" in (
        targets
    )
    assert "| S4r (warehouse table): second run's memory above imports at 900 <= 1.5x at 300 |" in (
        targets
    )


def test_a_failed_run_shows_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression S4r guards: a second run failing (DuckDB out of memory in the MERGE) is a
    failed row and a failed target, and the harness goes on; a failed set-up skips the second."""
    calls: list[tuple[str, str]] = []

    def fake_worker(
        scenario: str, client: str, note: str, config: ClientConfig, timeout_s: float
    ) -> Measurement:
        calls.append((client, config.variant))
        measured = Measurement(scenario, client, note, rows=config.rows, ok=config.rows)
        measured.wall_s, measured.peak_rss_mb = 1.0, 200.0 + config.rows / 10
        if client == "agentbatch.run" and config.variant == "edited":
            measured.error = OOM
        if client == "agentbatch.run" and config.variant == "delta" and config.rows == 20:
            measured.error = "did not finish within 400s"
        return measured

    monkeypatch.setattr(scale, "run_worker", fake_worker)
    found = run_second_runs((10, 20), ("warehouse", "delta"), tmp_path, log=lambda _: None)
    # The set-up that failed (Delta, 20 rows) has no second run.
    assert calls.count(("agentbatch.run", "delta,edited")) == 1
    assert calls.count(("agentbatch.run", "edited")) == 2
    text = second_run_section(found)
    assert f"| warehouse table | 10 | failed: {OOM} | | | | | 10, 201 | |" in text
    assert "| Delta folder | 10 | 10 | " in text
    assert (
        "| Delta folder | 20 | failed: set-up run failed: did not finish within 400s "
        "| | | | | failed: did not finish within 400s | |"
    ) in text
    checks = {c.target: c for c in check_targets([], [], [], found)}
    replaced = checks["S4r (warehouse table): the second run replaces every row"]
    assert replaced.holds is False and replaced.measured.startswith("10: failed: exit code 1")
    assert checks["S4r (Delta folder): the second run replaces every row"].holds is False
    memory = checks["S4r (Delta folder): second run's memory above imports at 20 <= 1.5x at 10"]
    assert memory.holds is None

    # A second run that ends without answering every row again is failed too.
    def partial(
        scenario: str, client: str, note: str, config: ClientConfig, timeout_s: float
    ) -> Measurement:
        done = config.rows // 2 if "edited" in config.variant else config.rows
        return Measurement(scenario, client, note, rows=done, ok=done, wall_s=1.0)

    monkeypatch.setattr(scale, "run_worker", partial)
    again = run_second_runs((10,), ("warehouse",), tmp_path / "again", log=lambda _: None)
    assert again.runs[0].second.error == "answered 5 of 10 rows again (0 failed)"
    assert isinstance(again, SecondRuns)


def test_s4r_is_a_scenario_of_the_command_line() -> None:
    args = parse_args(["--only", "S4r", "--scale-sizes", "300,900"])
    assert args.only == ("S4r",) and args.scale_sizes == (300, 900)
    assert "S4r" in parse_args([]).only
