"""Spec errors: one line each, naming file:line and the key path; exit code 2; nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job

VALID = """\
name: triage
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
request: "concat('Classify: ', subject)"
agent:
  endpoint: apps/triage-agent
  model_parameters: {max_tokens: 256}
output:
  table: main.support.out
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs" / "job.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(SpecError) as caught:
        load_job(path, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


def test_valid_job_loads(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, VALID))
    assert job.name == "triage"
    assert job.source.columns == ("subject",)
    assert job.agent.model_parameters.max_tokens == 256


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("  model_parameters: {max_tokens: 256}", "  model_parameters: {max_tokens: 0}"),
            "job.yml:9: agent.model_parameters.max_tokens: Input should be greater than 0",
        ),
        (
            ("  key: ticket_id", "  key: ticket_id\n  colour: blue"),
            "job.yml:5: source.colour: unknown key; did you mean 'columns'?",
        ),
        (
            ("  model_parameters: {max_tokens: 256}", "  model_parameters: {max_tokens: '256'}"),
            "job.yml:9: agent.model_parameters.max_tokens: Input should be a valid integer",
        ),
        (
            ("  table: main.support.out", "  table: main.support.out\n  table: main.x.y"),
            "job.yml:12: output.table: duplicate key (first at line 11)",
        ),
        (
            ("  table: main.support.tickets", '  table: "main.support; DROP TABLE x"'),
            "job.yml:3: source.table: 'main.support; DROP TABLE x' is not a valid table name",
        ),
        (
            ("request: \"concat('Classify: ', subject)\"", 'request: "1); DROP TABLE t; --"'),
            "job.yml:6: request: the request is not valid Databricks SQL",
        ),
        (
            ("  endpoint: apps/triage-agent", "  endpoint: apps/Bad_Name"),
            "job.yml:8: agent.endpoint: an app endpoint is `apps/<name>`",
        ),
        (
            ("name: triage", "name: triage\nsource2: 1"),
            "job.yml:2: source2: unknown key; did you mean 'source'?",
        ),
        (("  endpoint: apps/triage-agent\n", ""), "job.yml:7: agent.endpoint: Field required"),
        (
            (
                "request: \"concat('Classify: ', subject)\"",
                "request: \"concat({{ var('missing') }})\"",
            ),
            "job.yml:6: request: variable 'missing' is not set",
        ),
        (
            ("request: \"concat('Classify: ', subject)\"", "request: \"{{ ''.__class__ }}\""),
            "job.yml:6: request: not allowed in templates",
        ),
        (
            ("request: \"concat('Classify: ', subject)\"", "request: \"{{ env('HOME') }}\""),
            "job.yml:6: request: environment variable 'HOME' is not declared",
        ),
        (
            ("  columns: [subject]", "  columns: [subject, error]"),
            "job.yml:5: source.columns: 'error' is a result column name",
        ),
        (
            ("  endpoint: apps/triage-agent", '  endpoint: "http://agent host/"'),
            "job.yml:8: agent.endpoint: 'http://agent host/' is not a valid URL",
        ),
        (
            ("  endpoint: apps/triage-agent", "  endpoint: builtin:nope"),
            "job.yml:8: agent.endpoint: 'builtin:nope' is not a built-in agent",
        ),
        (
            ("  key: ticket_id", "  key: error"),
            "job.yml:4: source.key: 'error' is a result column name",
        ),
        (
            ("  columns: [subject]", '  columns: [subject, "review text"]'),
            "job.yml:5: source.columns[1]: 'review text' has a space, which Delta output tables "
            "refuse in column names",
        ),
        (
            ("  key: ticket_id", '  key: "ticket id"'),
            "job.yml:4: source.key: 'ticket id' has a space, which Delta output tables refuse",
        ),
        (
            ("  columns: [subject]", "  columns: [subject, _request]"),
            "job.yml:5: source.columns: '_request' is a name agentbatch's statements use",
        ),
        (
            ("  columns: [subject]", "  columns: [subject, Ticket_ID]"),
            # At the line of `columns`, where the fix is (was: the line of `source:`).
            "job.yml:5: source.columns: the key is always kept; do not list 'ticket_id' in "
            "`columns`",
        ),
        (("  columns: [subject]", "  columns: [subject\n"), "job.yml:"),
        # In YAML's words, not pydantic's ("Input should be a valid tuple").
        (
            ("  columns: [subject]", "  columns: subject"),
            "job.yml:5: source.columns: should be a list, not the text 'subject'",
        ),
        (
            ("  model_parameters: {max_tokens: 256}", "  custom_inputs: [a]"),
            "job.yml:9: agent.custom_inputs: should be a mapping, not a list",
        ),
        (
            # The Jobs service refuses it when the bundle deploys.
            (
                "  table: main.support.out",
                "  table: main.support.out\nschedule:\n"
                "  quartz_cron_expression: '0 0 6 * * ?'\n  timezone_id: Mars/Base",
            ),
            "job.yml:14: schedule.timezone_id: 'Mars/Base' is not a time zone id",
        ),
        (
            # Pydantic's union check gave four errors at keys the file does not have
            # (`vars.a.str`, `vars.a.int`, ...).
            ("  table: main.support.out", "  table: main.support.out\nvars: {a: {b: 1}}"),
            "job.yml:12: vars: variable 'a' is a mapping: a variable is a string, number or boolean",
        ),
        (
            # It said to use letters, digits, _ and -, which it does.
            ("name: triage", "name: " + "a" * 101),
            "job.yml:1: name: at most 100 characters, not 101",
        ),
        (
            # It passed validation, then the run crashed in aiohttp's timer with a traceback.
            ("  model_parameters: {max_tokens: 256}", "  timeout_seconds: .inf"),
            "job.yml:9: agent.timeout_seconds: Input should be a finite number",
        ),
        (
            # SQL's LIMIT takes a BIGINT: the run failed in the engine, naming no line or key.
            ("  columns: [subject]", "  columns: [subject]\n  limit: 9223372036854775808"),
            "job.yml:6: source.limit: Input should be less than or equal to 9223372036854775807",
        ),
    ],
)
def test_each_error_names_file_line_and_key(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in VALID
    message = error_of(write(tmp_path, VALID.replace(old, new)))
    first = message.splitlines()[0]
    assert expected in first, message
    assert first.split(":")[0].endswith("job.yml")


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    path.write_bytes(VALID.replace("Classify", "Classif\xe9").encode("latin-1"))
    assert error_of(path).startswith(f"{path}:6: not UTF-8 text")


def test_every_error_of_a_file_is_reported(tmp_path: Path) -> None:
    text = VALID.replace("max_tokens: 256", "max_tokens: -1, temperature: 9").replace(
        "  key: ticket_id", "  key: ticket_id\n  extra: 1"
    )
    lines = error_of(write(tmp_path, text)).splitlines()
    assert len(lines) == 3
    assert any("max_tokens" in line for line in lines)
    assert any("temperature" in line for line in lines)
    assert any("source.extra: unknown key" in line for line in lines)


def test_var_values_are_inert_literals(tmp_path: Path) -> None:
    text = VALID.replace(
        "request: \"concat('Classify: ', subject)\"",
        "request: \"concat({{ var('team') }}, subject)\"",
    )
    hostile = "x'); DROP TABLE t; --"
    job = load_job(write(tmp_path, text), {"team": hostile})
    assert job.request == "concat('x\\'); DROP TABLE t; --', subject)"


def test_an_infinite_variable_still_loads_where_an_infinite_timeout_is_refused(
    tmp_path: Path,
) -> None:
    """Spec floats refuse `.inf` (a timeout of `.inf` crashed the run); a variable is a value
    the job quotes, and `.inf` renders as a literal that reads back as infinity."""
    text = VALID.replace(
        "request: \"concat('Classify: ', subject)\"",
        "request: \"concat(CAST({{ var('cap') }} AS STRING), subject)\"",
    )
    job = load_job(write(tmp_path, text + "vars: {cap: .inf}\n"))
    assert job.vars == {"cap": float("inf")}
    assert "inf" in job.request.lower() and "{{" not in job.request


def test_jinja_in_a_variables_default_is_refused_not_sent_as_text(tmp_path: Path) -> None:
    # `vars:` values are data: `{{ var('b') }}` there would reach the prompt as those characters.
    text = VALID.replace(
        "request: \"concat('Classify: ', subject)\"",
        "request: \"concat({{ var('a') }}, subject)\"",
    )
    text += "vars:\n  b: x\n  a: \"{{ var('b') }}\"\n"
    assert error_of(write(tmp_path, text)).startswith(
        f"{tmp_path / 'jobs' / 'job.yml'}:14: vars.a: a variable's default is used as it is, "
        "without Jinja"
    )
    # A --var value is data too: it is taken as it is, never refused.
    job = load_job(write(tmp_path, VALID + "vars: {a: x}\n"), {"a": "{{ y }}"})
    assert job.vars["a"] == "{{ y }}"


def test_cli_validate_reports_all_files_and_exits_2(tmp_path: Path) -> None:
    good = write(tmp_path, VALID)
    bad = tmp_path / "jobs" / "bad.yml"
    bad.write_text(VALID.replace("max_tokens: 256", "max_tokens: 0"))
    worse = tmp_path / "jobs" / "worse.yml"
    worse.write_text(VALID.replace("name: triage", "name: triage\nname: again"))
    done = subprocess.run(
        [sys.executable, "-m", "agentbatch", "validate", str(good), str(bad), str(worse)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert f"ok  {good}" in done.stdout
    assert "bad.yml:9: agent.model_parameters.max_tokens" in done.stderr
    assert "worse.yml:2: name: duplicate key" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".agentbatch").exists()  # validating writes nothing


def test_cli_run_with_bad_spec_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path, VALID.replace("  key: ticket_id", "  key: ticket_id\n  colour: blue"))
    done = subprocess.run(
        [sys.executable, "-m", "agentbatch", "run", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"{bad}:5: source.colour: unknown key; did you mean 'columns'?"
    ]
    assert not (tmp_path / ".agentbatch").exists()


def test_var_on_the_command_line_is_inert(tmp_path: Path) -> None:
    text = VALID.replace(
        "request: \"concat('Classify: ', subject)\"",
        "request: \"concat({{ var('team') }}, subject)\"",
    )
    path = write(tmp_path, text)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentbatch",
            "render",
            str(path),
            "--var",
            "team=a'); DROP TABLE t; --",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "concat('a\\'); DROP TABLE t; --', subject)" in done.stdout
    import sqlglot

    for statement in sqlglot.parse(done.stdout, read="databricks"):
        assert statement is None or not isinstance(statement, sqlglot.exp.Drop)


def test_validate_checks_the_jobs_own_template(tmp_path: Path) -> None:
    """`template:` replaces the push-down statement, rendered only where ai_query runs: validate
    renders it whatever the target, and a missing or broken one names the file's line."""
    job = tmp_path / "jobs" / "own.yml"
    job.parent.mkdir()
    templates = tmp_path / "sqltemplates"
    templates.mkdir()
    (templates / "broken.sql").write_text("SELECT {% if %}\n")
    base = (
        "name: own\nsource: {table: main.s.t, key: id}\nrequest: txt\n"
        "agent: {endpoint: my-model}\noutput: {table: main.s.o}\n"
    )
    for template, expected in (
        ("nope.sql", "own.yml:6: template: template 'nope.sql' not found"),
        ("broken.sql", "broken.sql:1: template syntax error"),
    ):
        job.write_text(base + f"template: {template}\n")
        done = subprocess.run(
            [sys.executable, "-m", "agentbatch", "validate", str(job)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (
            '"STRUCT<label: STRING, label: INT>"',
            "job.yml:9: agent.response_format: field 'label' is given twice",
        ),
        # Names are case-insensitive in Databricks: Delta refuses the column.
        ('"STRUCT<label: STRING, Label: INT>"', "field 'label' is given twice"),
        # sqlglot reads these; Databricks refuses them (they crashed the planning).
        ('"STRUCT<a: ARRAY<>>"', "job.yml:9: agent.response_format: ARRAY takes 1 type(s)"),
        ('"STRUCT<a: MAP<STRING>>"', "MAP takes 2 type(s)"),
        ('"STRUCT<a: STRUCT<>>"', "a STRUCT needs at least one field"),
        ('"STRUCT<a: DECIMAL(39)>"', "DECIMAL(39): precision is 1 to 38"),
        ('"STRUCT<a: DECIMAL(5, 10)>"', "scale 0 to the precision"),
        ('"STRUCT<a: INT> extra"', "has text after its STRUCT<...>"),
        # A `required` that checks nothing: every answer without the field would pass.
        ("{type: object, properties: {a: {type: string}}, required: a}", "must be a list"),
        (
            "{type: object, properties: {a: {type: string}}, required: [b]}",
            "job.yml:9: agent.response_format: `required` names 'b', which is not in",
        ),
        (
            '{type: object, properties: {"it\'s": {type: string}}}',
            'job.yml:9: agent.response_format: "it\'s" is not a valid identifier',
        ),
    ],
)
def test_a_response_format_found_wrong_when_planned_names_its_line(
    tmp_path: Path, fmt: str, expected: str
) -> None:
    import agentbatch

    path = write(
        tmp_path,
        VALID.replace("  model_parameters: {max_tokens: 256}", f"  response_format: {fmt}"),
    )
    with pytest.raises(SpecError) as caught:
        agentbatch.plan(path)
    assert expected in str(caught.value)
