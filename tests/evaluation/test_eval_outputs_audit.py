"""Found by an audit of what `eval` and `compare` print and report."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbatch.cli.main import main
from agentbatch.testing.agent_server import AgentServer
from tests.evaluation.test_eval_cli import eval_args


@pytest.mark.parametrize("folder", ["[v1]", "[/x]"])
def test_the_printed_report_path_is_the_path_written(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    """rich read a `[...]` in a printed path as markup: `--report out/[v1]` printed
    `out//report.md` (a folder that does not exist), and `[/x]` stopped the command on a
    MarkupError after everything was written. A path longer than 80 characters (this test's)
    was broken across lines when stdout is not a terminal."""
    assert len(str(project / "out" / folder / "report.html")) > 80
    report = project / "out" / folder
    assert main(eval_args(project, demo_agent, "--no-mlflow", "--report", str(report))) == 0
    printed = capsys.readouterr().out
    assert (report / "report.md").is_file()
    assert f"report:  {report / 'report.md'}" in printed
