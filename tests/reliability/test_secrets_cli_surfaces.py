"""What a command prints before any agent is called: the refusal of an endpoint URL that is not
valid (it quoted the URL whole, password and `?code=` key included), a dry run's requests and an
engine's error quoting the SQL literal a job's `{{ env('NAME') }}` rendered. Real commands
(`agentbatch.cli.main.main`), at default and `-v` logging; stdout and stderr are searched.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

import agentbatch
from agentbatch.cli.main import main

from .secret_search import file_texts, leaks

TICKETS = Path(agentbatch.__file__).parent / "data" / "support_tickets.csv"
JOBS = Path(agentbatch.__file__).parent.parent / "jobs"


def _printed(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.mark.parametrize(
    "shape",
    [
        "http://alice:{pw}@127.0.0.1:9/agent path?code={code}",  # a space: refused
        "http://alice:{pw}@127.0.0.1:9/agent?code={code} x",
        "http://alice:{pw}@127.0.0.1:99999/agent?code={code}",  # port out of range
        "http://alice:p(w{pw}@127.0.0.1:9 /agent?code={code}",  # a bracket in the password
    ],
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_refused_endpoint_url_is_not_quoted_with_its_credentials(
    shape: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw, code = "pw" + secrets.token_hex(8), "key" + secrets.token_hex(8)
    url = shape.format(pw=pw, code=code)
    args = [
        command,
        str(JOBS / "support_agent_serving.yml"),
        "--table",
        f"main.support.tickets={TICKETS}",
        "--endpoint",
        f"support-agent={url}",
    ]
    if command == "run":
        args += ["--state-dir", str(tmp_path / "state")]
    for verbose in ([], ["-v"]):
        code_ = main([*verbose, *args])
        printed = _printed(capsys)
        assert code_ == 2, printed
        assert "support-agent" in printed  # the refusal names the mapping...
        assert not leaks([pw, code], {"printed": printed}), printed  # ...not its credentials


def test_a_job_whose_endpoint_url_is_refused_is_not_quoted_with_its_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw, code = "pw" + secrets.token_hex(8), "key" + secrets.token_hex(8)
    job = tmp_path / "project" / "jobs" / "bad_url.yml"
    job.parent.mkdir(parents=True)
    text = (JOBS / "support_agent_serving.yml").read_text()
    bad = f'"http://alice:{pw}@127.0.0.1:9/agent path?code={code}"'
    job.write_text(text.replace("endpoint: support-agent", f"endpoint: {bad}"))
    tickets = ["--table", f"main.support.tickets={TICKETS}"]
    results = {
        "validate": main(["validate", str(job)]),
        "validate --target local": main(["validate", "--target", "local", str(job), *tickets]),
        "plan -v": main(["-v", "plan", str(job), *tickets]),
        "render": main(["render", str(job)]),
        "run --dry-run": main(
            ["run", "--dry-run", str(job), *tickets, "--state-dir", str(tmp_path / "s")]
        ),
    }
    printed = _printed(capsys)
    assert set(results.values()) == {2}, (results, printed)
    assert "agent.endpoint" in printed
    assert not leaks([pw, code], {"printed": printed}), printed


ENV_JOB = """
name: env_job
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
  where: "status = 'open'"
request: "{request}"
agent:
  endpoint: support-agent
  custom_inputs: {{api_key: "{{{{ env('SUPPORT_API_KEY') }}}}"}}
output:
  table: main.support.env_out
env: [SUPPORT_API_KEY]
"""


def _env_job(project: Path, request: str) -> Path:
    job = project / "jobs" / "env_job.yml"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text(ENV_JOB.format(request=request))
    return job


@pytest.mark.parametrize("as_json", [False, True])
def test_a_dry_run_shows_no_value_read_from_the_environment(
    as_json: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = "envkey-" + secrets.token_hex(10) + "'quoted"
    monkeypatch.setenv("SUPPORT_API_KEY", value)
    job = _env_job(tmp_path / "project", "concat({{ env('SUPPORT_API_KEY') }}, ' ', subject)")
    args = ["-v", "run", "--dry-run", "--show", "3", str(job)]
    args += ["--table", f"main.support.tickets={TICKETS}", "--state-dir", str(tmp_path / "s")]
    assert main([*args, *(["--json"] if as_json else [])]) == 0
    captured = capsys.readouterr()
    if as_json:
        requests = json.loads(captured.out)["requests"]
        assert len(requests) == 3
        assert requests[0]["body"]["custom_inputs"] == {"api_key": "***"}
    assert "*** " in captured.out  # the request, as it would be sent, masked
    places = {"stdout": captured.out, "stderr": captured.err}
    assert not leaks([value, value.replace("'", "''")], places), captured.out


def test_an_engine_error_quoting_an_environment_value_does_not_print_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DuckDB's conversion error quotes the literal it could not convert: the env value."""
    value = "envkey-" + secrets.token_hex(10)
    monkeypatch.setenv("SUPPORT_API_KEY", value)
    request = "concat(subject, cast({{ env('SUPPORT_API_KEY') }} as integer))"
    job = _env_job(tmp_path / "project", request)
    tickets = ["--table", f"main.support.tickets={TICKETS}", "--state-dir", str(tmp_path / "s")]
    dry = main(["-v", "run", "--dry-run", str(job), *tickets])
    printed_dry = capsys.readouterr()
    real = main(["run", str(job), *tickets, "--endpoint", "support-agent=builtin:instant"])
    printed_real = capsys.readouterr()
    assert dry == real == 5, printed_dry.err + printed_real.err
    assert "Could not convert string '***' to INT32" in printed_real.err
    places = {
        "dry run -v": printed_dry.out + printed_dry.err,
        "run": printed_real.out + printed_real.err,
    }
    places.update({k: v for k, v in file_texts(tmp_path).items() if "/jobs/" not in k})
    assert not leaks([value], places), places


def test_an_engine_error_quoting_an_environment_value_through_the_api_does_not_carry_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python API registers the job's env() values when it plans the run, not only the CLI."""
    import agentbatch
    from agentbatch.errors import EngineError

    value = "apikey-" + secrets.token_hex(10)
    monkeypatch.setenv("SUPPORT_API_KEY", value)
    request = "concat(subject, cast({{ env('SUPPORT_API_KEY') }} as integer))"
    job = _env_job(tmp_path / "project", request)
    with pytest.raises(EngineError) as failed:
        agentbatch.run(
            job,
            tables={"main.support.tickets": str(TICKETS)},
            endpoints={"support-agent": "builtin:instant"},
            state_dir=tmp_path / "s",
            progress=False,
        )
    assert "Could not convert string '***' to INT32" in str(failed.value)
    assert value not in str(failed.value) and value not in repr(failed.value)
