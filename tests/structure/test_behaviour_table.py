"""docs/databricks-behaviour.md: every platform rule has a source (or says ASSUMPTION) and names
tests that exist; and the routing rule it records for agents on Model Serving."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import agentbatch
from tests.support.python_source import parse_file

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "databricks-behaviour.md"
HEADER = "| rule | source | enforced by (fake) | test |"


def rows() -> list[list[str]]:
    lines = TABLE.read_text().splitlines()
    start = lines.index(HEADER)
    found = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, f"a row needs 4 cells: {line}"
        found.append(cells)
    return found


def defined_tests(path: Path) -> set[str]:
    tree = parse_file(path)
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_rule_has_a_source_and_tests_that_exist() -> None:
    table = rows()
    assert len(table) >= 15
    for rule, source, _fake, tests in table:
        assert source or "ASSUMPTION" in rule, f"no source for: {rule}"
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", tests)
        # A rule that cannot be exercised here says so, and why, as an assumption.
        assert named or "ASSUMPTION" in tests, f"no test named for: {rule}"
        for path, name in named:
            assert (ROOT / path).is_file(), f"{path} does not exist ({rule})"
            assert name in defined_tests(ROOT / path), f"{path}::{name} does not exist"


def test_agents_on_model_serving_go_through_rest_and_plan_says_why() -> None:
    """ai_query returns a custom model's answer as the struct of its signature, so a job with a
    request body (an agent on Model Serving) is planned for the REST fallback, with the reason."""
    agent = agentbatch.plan(ROOT / "jobs" / "support_agent_serving.yml", target="databricks-sql")
    assert agent.strategy == "rest-fallback"
    assert "struct of its signature" in agent.reason
    model = agentbatch.plan(ROOT / "jobs" / "triage_foundation_model.yml", target="databricks-sql")
    assert model.strategy == "push-down"
