"""A `--endpoint NAME=URL` mapping may carry a credential (user:password@host, `?code=` as Azure
Functions use): no command prints it, whatever it says about the mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentbatch
from agentbatch.cli.main import main

SECRET = "Sx9secretvalue42"
URL = f"http://alice:{SECRET}@127.0.0.1:9/agent?code={SECRET}"
JOBS = Path(agentbatch.__file__).parent.parent / "jobs"
TICKETS = Path(agentbatch.__file__).parent / "data" / "support_tickets.csv"


@pytest.mark.parametrize("command", [["plan"], ["run", "--dry-run", "--show", "2"]])
def test_a_mapped_endpoint_url_is_shown_without_its_credentials(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *command,
            str(JOBS / "support_agent_serving.yml"),
            "--table",
            f"main.support.tickets={TICKETS}",
            "--endpoint",
            f"support-agent={URL}",
            # A run's project folder is the job's (this checkout) unless told otherwise.
            *(
                ["--state-dir", str(tmp_path), "--project-dir", str(tmp_path)]
                if command[0] == "run"
                else []
            ),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = captured.out + captured.err
    if command[0] == "plan":
        assert "mapped to 'http://***@127.0.0.1:9/agent?code=***'" in printed
    assert SECRET not in printed


def test_a_job_whose_endpoint_url_carries_credentials_is_planned_without_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "url_job.yml"
    text = (JOBS / "support_agent_serving.yml").read_text()
    job.write_text(text.replace("endpoint: support-agent", f"endpoint: {URL}"))
    assert URL in job.read_text()
    tickets = ["--table", f"main.support.tickets={TICKETS}"]
    assert main(["plan", str(job), *tickets]) == 0
    assert main(["run", "--dry-run", str(job), *tickets, "--state-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "call http://***@127.0.0.1:9/agent?code=*** over REST" in captured.out
    assert SECRET not in captured.out + captured.err
