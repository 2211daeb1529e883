"""The template sandbox: no Python internals, no files outside the template folders, no environment
variables the job did not declare. In job-file values (text and SQL) and in project templates in
`sqltemplates/` (a push-down `template:` and an override of a built-in). Every attempt is a
SpecError naming where it happened, and neither the file it aimed at nor the variable leaks.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job_text

from .spec_cases import BASE, dump

ENV_NAME = "AGENTBATCH_RELIABILITY_SECRET"
ENV_VALUE = "env-secret-4d1f0c9a"
OUTSIDE_MARKER = "OUTSIDE-THE-TEMPLATES-7c2e"

INTERNALS = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ range.__self__ }}",
    "{{ var.__self__ }}",
    "{{ var.__func__.__globals__ }}",
    "{{ env.__self__._allowed_env }}",
    "{{ ident.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ (var|attr('__self__')) }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{0.__func__.__globals__}'.format(var) }}",
    "{{ '{x.__class__.__base__}'.format_map({'x': ''}) }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{% set x = [] %}{{ x.append(1) }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{{ ''.join.__self__.__class__ }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ lipsum.__globals__.__builtins__.open('/etc/passwd').read() }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ config }}",
    "{{ request }}",
]
FILES = [
    "{% include '../outside/secret.txt' %}",
    "{% include '../../outside/secret.txt' %}",
    "{% include 'OUTSIDE_ABS' %}",
    "{% include '/etc/passwd' %}",
    "{% include '../../../../../../../../etc/passwd' %}",
    "{% import 'OUTSIDE_ABS' as x %}{{ x }}",
    "{% from 'OUTSIDE_ABS' import y %}{{ y }}",
    "{% extends '/etc/passwd' %}",
    "{% include 'sqltemplates/../../outside/secret.txt' %}",
    "{% include '..\\\\outside\\\\secret.txt' %}",
    "{% include ['nope.sql', '../outside/secret.txt'] %}",
]
ENVIRONMENT = [
    "{{ env('" + ENV_NAME + "') }}",
    "{{ env('HOME') }}",
    "{{ env('DATABRICKS_TOKEN', 'fallback') }}",
    "{{ env(('" + ENV_NAME + "')|lower|upper) }}",
]
ATTEMPTS = INTERNALS + FILES + ENVIRONMENT


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NAME, ENV_VALUE)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with sqltemplates/ and, beside it, a folder no template may read."""
    root = tmp_path / "project"
    (root / "sqltemplates").mkdir(parents=True)
    (tmp_path / "project" / "outside").mkdir()
    for folder in (tmp_path / "outside", root / "outside"):
        folder.mkdir(exist_ok=True)
        (folder / "secret.txt").write_text(OUTSIDE_MARKER)
    return root


def concrete(attempt: str, project: Path) -> str:
    return attempt.replace("OUTSIDE_ABS", str(project.parent / "outside" / "secret.txt"))


def assert_refused(error: SpecError | None, where: str) -> None:
    assert error is not None, "the attempt rendered"
    message = str(error)
    assert message.startswith(where), message
    assert OUTSIDE_MARKER not in message and ENV_VALUE not in message and "root:" not in message


def load(spec: dict[str, Any], project: Path) -> SpecError | None:
    try:
        job = load_job_text(dump(spec), "sandbox.yml", template_dirs=[project / "sqltemplates"])
        agentbatch.plan(job, "databricks-sql", project_dir=project)
        agentbatch.plan(job, "local", project_dir=project)
    except SpecError as err:
        return err
    return None


def job_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    spec["agent"]["endpoint"] = "my-endpoint"  # push-down on databricks-sql: uses `template:`
    # A request body (custom inputs, Databricks options) would send it over REST instead.
    del spec["agent"]["custom_inputs"], spec["agent"]["databricks_options"]
    spec.update(changes)
    return spec


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=range(len(ATTEMPTS)))
def test_in_a_text_value(project: Path, attempt: str) -> None:
    spec = job_spec(description=concrete(attempt, project))
    assert_refused(load(spec, project), "sandbox.yml:2: description:")


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=range(len(ATTEMPTS)))
def test_in_a_sql_value(project: Path, attempt: str) -> None:
    spec = job_spec(request="concat(" + concrete(attempt, project) + ", body)")
    assert_refused(load(spec, project), "sandbox.yml:")


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=range(len(ATTEMPTS)))
def test_in_a_project_template(project: Path, attempt: str) -> None:
    (project / "sqltemplates" / "evil.sql").write_text(
        "SELECT " + concrete(attempt, project) + " AS x FROM {{ source }}\n"
    )
    spec = job_spec(template="evil.sql")
    assert_refused(load(spec, project), "evil.sql:")


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=range(len(ATTEMPTS)))
def test_in_an_override_of_a_built_in(project: Path, attempt: str) -> None:
    (project / "sqltemplates" / "summary.sql").write_text(
        "SELECT count(*) AS rows, " + concrete(attempt, project) + " AS x FROM {{ output }}\n"
    )
    assert_refused(load(job_spec(), project), "summary.sql:")


def test_declared_environment_variables_are_readable(project: Path) -> None:
    spec = job_spec(env=[ENV_NAME], description="{{ env('" + ENV_NAME + "') }}")
    job = load_job_text(dump(spec), "sandbox.yml")
    assert job.description == ENV_VALUE
    (project / "sqltemplates" / "summary.sql").write_text(
        "SELECT count(*) AS rows, {{ env('" + ENV_NAME + "') }} AS x FROM {{ output }}\n"
    )
    plan = agentbatch.plan(job, "local", project_dir=project)
    assert f"'{ENV_VALUE}'" in plan.summary.sql  # declared: readable, and quoted as a literal


def test_templates_inside_the_folders_still_work(project: Path) -> None:
    """The refusals above are the sandbox, not a loader that reads nothing."""
    (project / "sqltemplates" / "part.sql").write_text("'from a project part'")
    (project / "sqltemplates" / "summary.sql").write_text(
        "SELECT count(*) AS rows, {% include 'part.sql' %} AS x FROM {{ output }}\n"
    )
    job = load_job_text(dump(job_spec()), "sandbox.yml")
    plan = agentbatch.plan(job, "local", project_dir=project)
    assert "'from a project part'" in plan.summary.sql
