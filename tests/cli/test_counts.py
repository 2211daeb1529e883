"""Options that count rows take 0 or more: `--show -1` printed every row but one."""

from __future__ import annotations

import pytest

from agentbatch.cli.main import main


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "jobs/ticket_triage.yml", "--show", "-1"],
        ["estimate", "jobs/ticket_triage.yml", "--sample", "-5"],
        ["show", "main.s.t", "--limit", "-3"],
        ["show", "main.s.t", "--limit", "ten"],
    ],
)
def test_a_count_below_zero_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "is below 0" in err or "is not a whole number" in err
