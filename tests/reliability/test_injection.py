"""Injection attempts in every string field of a job and in `--var` values.

The contract: where a value is a name (tables, keys, columns, endpoints, templates) a hostile value
is a SpecError; where it is data it becomes an inert literal. Checked on the rendered SQL of both
strategies (push-down on databricks-sql, REST fallback on local): every statement parses as ONE
statement whose syntax tree has exactly the shape it has with a harmless value, and the payload
sits whole inside a string literal. End to end, the local engine runs the job with the payload
and the agent receives it verbatim, the source intact.
"""

from __future__ import annotations

import copy
import csv
import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

import agentbatch
from agentbatch.cli.main import main as cli_main
from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job_text

from .spec_cases import BASE, dump, set_path

PAYLOADS = [
    "x'); DROP TABLE main.support.tickets; --",
    "x`; DROP TABLE t; --",
    'x"; DROP TABLE t; --',
    "' OR '1'='1",
    "\\'; DROP TABLE t; --",
    "x\\",
    "*/ DROP TABLE t; /*",
    "x\n; DROP TABLE t; --",
    "$$ DROP TABLE t $$",
    "${catalog}; DROP TABLE t",
    "{{ 7 * 7 }}",
    "{% raw %}x",
    "main.support.tickets; DROP TABLE t",
    "a` DROP TABLE t --`",
    "\u02bc; DROP TABLE t; --",
    "x'; SELECT * FROM system.secrets; --",
    "t DROP TABLE t",
    "\\\\'; DROP TABLE t; --",
    "\x00'; DROP TABLE t",
    "x' || (SELECT secret FROM s) || '",
]
HARMLESS = "harmless"
VAR = "{{ var('p') }}"

# (name, path, value): every string field of a job, with the variable where a value goes.
FIELDS: list[tuple[str, tuple[Any, ...], str]] = [
    ("name", ("name",), VAR),
    ("description", ("description",), VAR),
    ("source.table", ("source", "table"), "main." + VAR + ".tickets"),
    ("source.key", ("source", "key"), VAR),
    ("source.columns", ("source", "columns", 0), VAR),
    ("source.where", ("source", "where"), "status = " + VAR),
    ("source.where ident", ("source", "where"), "{{ ident(var('p')) }} = 'open'"),
    ("request", ("request",), "concat('Classify: ', " + VAR + ", body)"),
    ("request ident", ("request",), "concat({{ ident(var('p')) }}, body)"),
    ("agent.endpoint", ("agent", "endpoint"), VAR),
    ("agent.custom_inputs", ("agent", "custom_inputs", "team"), VAR),
    ("agent.databricks_options", ("agent", "databricks_options", "tag"), VAR),
    ("agent.response_format", ("agent", "response_format"), "STRUCT<label: " + VAR + ">"),
    ("agent.model_parameters.stop", ("agent", "model_parameters", "stop", 0), VAR),
    ("output.table", ("output", "table"), "main.support." + VAR),
    ("template", ("template",), VAR),
    ("env", ("env", 0), VAR),
]
# Fields whose value reaches the SQL as data (the payload must then appear in a literal).
# (custom_inputs make a request body: an agent on Model Serving, called over REST, so they
# reach no SQL; they are still checked to be refused or inert.)
DATA_IN_SQL = {"source.where", "request", "agent.model_parameters.stop"}


def spec_with(path: tuple[Any, ...], value: str) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    spec["agent"]["endpoint"] = "my-endpoint"  # a serving endpoint: push-down on databricks-sql
    if path[:2] not in (("agent", "custom_inputs"), ("agent", "databricks_options")):
        # A prompt, not a body: a foundation model, so the job is pushed down into ai_query.
        del spec["agent"]["custom_inputs"], spec["agent"]["databricks_options"]
    spec["env"] = ["AGENTBATCH_TEST_ENV"]
    set_path(spec, path, value)
    return spec


def rendered(spec: dict[str, Any], payload: str, project: Path) -> list[str] | SpecError:
    """Every SQL statement of the job on both strategies, or the SpecError."""
    spec = {**spec, "vars": {"p": HARMLESS, **spec.get("vars", {})}}  # declared: given from outside
    try:
        job = load_job_text(dump(spec), "inj.yml", {"p": payload})
        statements: list[str] = []
        for target in ("local", "databricks-sql"):
            plan = agentbatch.plan(job, target, project_dir=project)
            statements += [s.sql for s in (*plan.statements, plan.summary)]
        return statements
    except SpecError as err:
        return err


def parse_one_statement(sql: str) -> exp.Expr:
    trees = [t for t in sqlglot.parse(sql, read="databricks") if t is not None]
    assert len(trees) == 1, f"{len(trees)} statements in:\n{sql}"
    return trees[0]


def shape(tree: exp.Expr) -> list[str]:
    return [type(node).__name__ for node in tree.walk()]


_BASELINES: dict[str, list[list[str]] | SpecError] = {}


def baseline_shapes(field: str, spec: dict[str, Any], project: Path) -> list[list[str]] | SpecError:
    """The statement shapes with a harmless value (rendered once per field)."""
    if field not in _BASELINES:
        result = rendered(spec, HARMLESS, project)
        _BASELINES[field] = (
            result
            if isinstance(result, SpecError)
            else [shape(parse_one_statement(sql)) for sql in result]
        )
    return _BASELINES[field]


def string_literals(tree: exp.Expr) -> list[str]:
    return [n.this for n in tree.find_all(exp.Literal) if n.is_string]


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
@pytest.mark.parametrize(("field", "path", "value"), FIELDS, ids=[f[0] for f in FIELDS])
def test_payload_is_refused_or_inert(
    tmp_path: Path, field: str, path: tuple[Any, ...], value: str, payload: str
) -> None:
    spec = spec_with(path, value)
    attacked = rendered(spec, payload, tmp_path)
    if isinstance(attacked, SpecError):
        assert str(attacked).startswith("inj.yml:"), str(attacked)
        return
    baseline = baseline_shapes(field, spec, tmp_path)
    assert not isinstance(baseline, SpecError), f"only the payload passed: {baseline}"
    assert len(attacked) == len(baseline)
    literals: list[str] = []
    for before, after in zip(baseline, attacked, strict=True):
        tree = parse_one_statement(after)
        assert shape(tree) == before, f"{field}: shape changed:\n{after}"
        literals += string_literals(tree)
    if field in DATA_IN_SQL:
        assert any(payload in text for text in literals), f"{payload!r} not in a literal"


@pytest.mark.parametrize(
    "field", ["request", "source.where", "source.query"], ids=lambda f: f"direct {f}"
)
@pytest.mark.parametrize("payload", PAYLOADS[:10], ids=range(10))
def test_sql_fields_written_with_extra_statements_are_refused(
    tmp_path: Path, field: str, payload: str
) -> None:
    """The author writes SQL expressions; a value that smuggles a second statement is refused."""
    spec = spec_with(("description",), "direct")
    attack = f"status = '{payload}"
    if field == "request":
        spec["request"] = f"concat('x', '{payload}')"
    elif field == "source.where":
        spec["source"]["where"] = attack
    else:
        del spec["source"]["table"]
        spec["source"]["query"] = f"SELECT * FROM main.support.tickets WHERE {attack}"
    result = rendered(spec, HARMLESS, tmp_path)
    if isinstance(result, SpecError):
        return
    for sql in result:
        tree = parse_one_statement(sql)
        for node in tree.walk():
            assert not isinstance(node, exp.Drop | exp.Delete | exp.Command), sql


@pytest.mark.parametrize("payload", PAYLOADS[:8], ids=range(8))
def test_var_on_the_command_line_is_inert(tmp_path: Path, payload: str) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    spec = spec_with(("request",), "concat('Classify: ', " + VAR + ", body)")
    spec["vars"]["p"] = HARMLESS
    (jobs / "inj.yml").write_text(dump(spec), encoding="utf-8")
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(
            ["render", str(jobs / "inj.yml"), "--target", "databricks-sql", "--var", f"p={payload}"]
        )
    if code == 2:
        return  # refused as a spec error
    assert code == 0
    statements = [s for s in sqlglot.parse(out.getvalue(), read="databricks") if s is not None]
    assert len(statements) == 2  # ensure the target, merge
    assert not any(isinstance(n, exp.Drop | exp.Delete) for s in statements for n in s.walk())


def test_payloads_run_end_to_end_verbatim(tmp_path: Path) -> None:
    """DuckDB runs the job once per payload; the agent echoes each payload whole."""
    source = tmp_path / "tickets.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ticket_id", "subject", "body", "status"])
        writer.writerow([1, "s", "b", "open"])
    before = source.read_bytes()
    spec = spec_with(("request",), VAR)
    spec["source"]["where"] = "status != " + VAR
    spec["agent"]["endpoint"] = "builtin:instant"
    del spec["agent"]["response_format"]
    for i, payload in enumerate(PAYLOADS):
        job = load_job_text(dump(spec), "inj.yml", {"p": payload})
        result = agentbatch.run(
            job,
            tables={
                "main.support.tickets": source,
                "main.support.triage": tmp_path / f"{i}.parquet",
            },
            project_dir=tmp_path,
            state_dir=tmp_path / "state",
            progress=False,
        )
        rows = result.to_pandas().to_dict("records")
        assert [r["response"] for r in rows] == ["echo: " + payload[:64]], payload
        assert source.read_bytes() == before


@settings(max_examples=60, deadline=None, database=None)
@given(st.text(max_size=80))
def test_any_var_value_is_inert_in_sql(
    tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    """Whatever text a --var holds, the SQL keeps its shape and the text sits whole in a literal."""
    spec = spec_with(("request",), "concat('Classify: ', " + VAR + ", body)")
    project = tmp_path_factory.getbasetemp()
    attacked = rendered(spec, value, project)
    if isinstance(attacked, SpecError):
        assert str(attacked).startswith("inj.yml:"), str(attacked)
        return
    baseline = baseline_shapes("request", spec, project)
    assert not isinstance(baseline, SpecError)
    literals: list[str] = []
    for before, after in zip(baseline, attacked, strict=True):
        tree = parse_one_statement(after)
        assert shape(tree) == before, after
        literals += string_literals(tree)
    assert any(value in text for text in literals)
