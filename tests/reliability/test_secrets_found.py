"""Leaks found by looking for surfaces the other secrets tests do not search.

An endpoint URL's password with a letter outside ASCII (`http://alice:pässwort@host/...`): aiohttp
sends the Basic credential of it encoded in Latin-1 (its `BasicAuth` default), while the run
registered the credential of the UTF-8 bytes only; an agent echoing its Authorization header in
an answer or a refusal wrote the credential, unmasked, into the output table and the stderr.

A job file's value that reads the environment with `{{ env('NAME') }}` is rendered when the file
is loaded; a value of the wrong kind (a text where a mapping belongs) was refused quoting it,
`agent.custom_inputs: should be a mapping, not the text '<the value>'`, before the run registers
the job's env() values as secrets (that happens when it plans). Real commands
(`agentbatch.cli.main.main`) and the Python API's loader; stdout, stderr and the error searched.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.cli.main import main
from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job_text

from .secret_search import file_texts, leaks
from .test_secrets_echoes import serve_echoing, write_job

TICKETS = Path(agentbatch.__file__).parent / "data" / "support_tickets.csv"

JOB = """
name: env_job
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
request: "subject"
agent:
  endpoint: support-agent
  custom_inputs: "{{ env('SUPPORT_API_KEY') }}"
output:
  table: main.support.env_out
env: [SUPPORT_API_KEY]
"""


@pytest.fixture
def value(monkeypatch: pytest.MonkeyPatch) -> str:
    found = "envkey-" + secrets.token_hex(10) + "'q\"uoted"
    monkeypatch.setenv("SUPPORT_API_KEY", found)
    return found


def _forms(value: str) -> list[str]:
    return [value, value.replace("'", "''"), repr(value)[1:-1], value[:17]]


def test_a_refused_value_read_from_the_environment_is_not_quoted(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "project" / "jobs" / "env_job.yml"
    job.parent.mkdir(parents=True)
    job.write_text(JOB)
    tickets = ["--table", f"main.support.tickets={TICKETS}"]
    state = ["--state-dir", str(tmp_path / "state")]
    commands = {
        "validate": ["validate", str(job)],
        "plan -v": ["-v", "plan", str(job), *tickets],
        "render": ["render", str(job)],
        "run --dry-run --json": ["run", "--dry-run", "--json", str(job), *tickets, *state],
    }
    places = {}
    for name, args in commands.items():
        assert main(args) == 2, name
        captured = capsys.readouterr()
        places[name] = captured.out + captured.err
        assert "agent.custom_inputs: should be a mapping, not the text '***'" in places[name]
    assert not leaks(_forms(value), places), places


def test_a_refused_value_read_from_the_environment_is_not_in_the_loaders_error(
    value: str,
) -> None:
    with pytest.raises(SpecError) as refused:
        load_job_text(JOB, "env_job.yml")
    assert "should be a mapping, not the text '***'" in str(refused.value)
    assert not leaks(_forms(value), {"error": str(refused.value), "repr": repr(refused.value)})


@pytest.mark.parametrize("mode", ["authorization_answer", "basic_credential_400"])
def test_the_basic_credential_of_a_password_outside_ascii_is_masked(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "pässwort-" + secrets.token_hex(8)
    with serve_echoing(mode, "unused") as (url, agent):
        endpoint = url.replace("http://", f"http://alice:{password}@") + "/agent"
        job = write_job(tmp_path / "project", "support-agent")
        out = tmp_path / "project" / "out.parquet"
        code = main(
            [
                "-v",
                "run",
                str(job),
                "--table",
                f"main.support.tickets={TICKETS}",
                "--table",
                f"main.support.echo_out={out}",
                "--endpoint",
                f"support-agent={endpoint}",
                "--state-dir",
                str(tmp_path / "project" / "state"),
                "--limit",
                "2",
                "--json",
            ]
        )
        printed = capsys.readouterr()
    assert code == 0, printed.err
    sent = agent.authorizations[0].partition(" ")[2]
    assert base64.b64decode(sent) == f"alice:{password}".encode("latin-1")  # as aiohttp sends it
    column = "response" if mode == "authorization_answer" else "error"
    values = pq.read_table(out).column(column).to_pylist()
    assert values and all("***" in v for v in values), values
    places: dict[str, Any] = {"stdout": printed.out, "stderr": printed.err}
    places.update(file_texts(tmp_path / "project"))
    pair = f"alice:{password}"
    forms = [password, sent, base64.urlsafe_b64encode(pair.encode("latin-1")).decode()]
    assert not leaks(forms, places), leaks(forms, places)


def test_a_query_key_the_http_client_sends_re_encoded_is_masked_when_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `?code=` key given percent-encoded (`%2F`, `%3D`, as `quote(key, safe="")` writes it):
    aiohttp (yarl) sends `/` plain and `%3D` as it is, a form that is neither the key as given nor
    decoded; an agent echoing its raw query string in a 500 quoted it unmasked."""
    key = "key" + secrets.token_hex(10)
    given = f"{key}%2Fab%2Bcd%3D%3D"
    with serve_echoing("query_string_500", "unused") as (url, agent):
        job = write_job(tmp_path / "project", "support-agent")
        out = tmp_path / "project" / "out.parquet"
        code = main(
            [
                "-v",
                "run",
                str(job),
                "--table",
                f"main.support.tickets={TICKETS}",
                "--table",
                f"main.support.echo_out={out}",
                "--endpoint",
                f"support-agent={url}/agent?code={given}",
                "--state-dir",
                str(tmp_path / "project" / "state"),
                "--limit",
                "2",
                "--json",
            ]
        )
        printed = capsys.readouterr()
    assert code == 0 and agent.posts >= 2, printed.err
    errors = pq.read_table(out).column("error").to_pylist()
    assert errors and all("bad query code=***" in e for e in errors), errors
    places: dict[str, Any] = {"stdout": printed.out, "stderr": printed.err}
    places.update(file_texts(tmp_path / "project"))
    assert not leaks([key], places), leaks([key], places)


EXECUTOR = """
import sys

import pyarrow as pa

from agentbatch.agent.calls import CallSpec
from agentbatch.engines.spark.calls import RemoteCall, answer_batches

url, token = sys.argv[1], sys.argv[2]
call = CallSpec(endpoint="sec-endpoint", timeout_s=5, max_retries=0)
remote = RemoteCall(call, {"sec-endpoint": url}, {"Authorization": f"Bearer {token}"})
batch = pa.RecordBatch.from_pydict(
    {"id": [1, 2], "_request": ["a", "b"], "request_fingerprint": ["f1", "f2"]}
)
rows = []
answer_batches([batch], remote, "id", rows.append)
for table in rows:
    for row in table.to_pylist():
        print(row["response"], row["error"])
"""


def test_headers_minted_on_the_driver_are_scrubbed_from_answers_on_an_executor(
    tmp_path: Path,
) -> None:
    """The Spark engine's REST fallback on executors: a PAT's (or any non-M2M credential's)
    header is minted on the driver and shipped in `RemoteCall.headers`; an executor's Python
    worker is a fresh process, where nothing had registered it, so an agent echoing its
    Authorization header in an answer wrote the token into the output rows. The executor's code
    (`answer_batches`), run in a fresh interpreter as a Spark Python worker is."""
    import subprocess
    import sys

    token = "dapi" + secrets.token_hex(16)
    script = tmp_path / "executor.py"
    script.write_text(EXECUTOR)
    with serve_echoing("authorization_answer", "unused") as (url, agent):
        done = subprocess.run(
            [sys.executable, str(script), f"{url}/agent/responses", token],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert agent.authorizations == [f"Bearer {token}"] * 2  # the token reached the agent
    assert done.stdout.count("you sent *** None") == 2, done.stdout
    assert not leaks([token], {"rows": done.stdout, "stderr": done.stderr})
