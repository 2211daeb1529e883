"""Run options are spelled once: `RunOptions` holds them, every way in builds it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import agentbatch
from agentbatch.cli.main import build_parser
from agentbatch.cli.options import run_options
from agentbatch.evaluation import compare, evaluate
from agentbatch.planning.definition import RunOptions
from tests.support.python_source import parse_file

PACKAGE = Path(agentbatch.__file__).parent
ROOT = PACKAGE.parent
FIELDS = {f.name for f in dataclasses.fields(RunOptions)}
JOB = ROOT / "jobs" / "ticket_triage.yml"


def test_no_function_spells_out_the_run_options() -> None:
    # A signature with several of RunOptions' fields is a second spelling of them.
    spelled = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(parse_file(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
                if len(names & FIELDS) >= 4:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert spelled == []


@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: agentbatch.plan(JOB, **kw),
        lambda **kw: agentbatch.render(JOB, **kw),
        lambda **kw: agentbatch.run(JOB, **kw),
        lambda **kw: agentbatch.estimate(JOB, **kw),
        lambda **kw: evaluate(JOB, **kw),
        lambda **kw: compare(JOB, JOB, **kw),
    ],
    ids=["plan", "render", "run", "estimate", "evaluate", "compare"],
)
def test_every_way_in_takes_exactly_the_run_options(call: object) -> None:
    with pytest.raises(TypeError, match="retry_error"):
        call(retry_error=True)  # type: ignore[operator]


def test_a_bad_option_is_refused_before_anything_runs() -> None:
    with pytest.raises(agentbatch.errors.UsageError, match="limit must be a positive number"):
        agentbatch.run(JOB, limit=0)
    with pytest.raises(agentbatch.errors.UsageError, match="secrets are not passed as settings"):
        agentbatch.run(JOB, settings={"token": "x"})


def test_the_cli_flags_become_run_options(tmp_path: Path) -> None:
    argv = [
        "run", str(JOB), "--var", "team=billing", "--table", "a.b.c=x.csv",
        "--endpoint", "apps/x=http://127.0.0.1:1", "--limit", "3", "--retry-errors",
        "--full-refresh", "--dry-run", "--state-dir", str(tmp_path), "--project-dir", str(ROOT),
        "--max-rows", "5", "--no-progress",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    args.settings = {"apps_secret_scope": "scope"}
    options = run_options(args)
    assert options.vars == {"team": "billing"}
    assert options.tables == {"a.b.c": "x.csv"}
    assert options.endpoints == {"apps/x": "http://127.0.0.1:1"}
    assert (options.limit, options.retry_errors, options.full_refresh) == (3, True, True)
    assert options.dry_run and not options.progress
    assert (options.state_dir, options.project_dir) == (tmp_path, ROOT)
    assert options.settings == {"apps_secret_scope": "scope", "max_rows": 5}


def test_a_started_run_has_its_own_id() -> None:
    options = RunOptions(limit=2)
    first, second = options.started(), options.started()
    assert options.run_id == "run"
    assert first.run_id != second.run_id and first.limit == second.limit == 2
