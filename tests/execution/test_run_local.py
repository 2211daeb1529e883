"""The main job end to end on the local engine, against the demo agent over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import JobFailedError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from tests.support.triage import OPEN_TICKETS, TICKETS, TRIAGE, triage_cli_args


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def run_triage(tmp_path: Path, agent: AgentServer, **kwargs: object) -> agentbatch.RunResult:  # type: ignore[name-defined]
    return agentbatch.run(
        TRIAGE,
        tables={
            "main.support.tickets": TICKETS,
            "main.support.ticket_triage": tmp_path / "out.parquet",
        },
        endpoints={"apps/triage-agent": agent.url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        progress=False,
        **kwargs,
    )


def test_main_job_answers_every_open_ticket_once(tmp_path: Path, agent: AgentServer) -> None:
    result = run_triage(tmp_path, agent)
    assert result.summary["sent"] == OPEN_TICKETS
    assert result.summary["ok"] == OPEN_TICKETS
    assert result.summary["errors"] == 0
    assert result.summary["table_rows"] == OPEN_TICKETS
    assert agent.stats().requests_total == OPEN_TICKETS
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len({row["ticket_id"] for row in out}) == len(out) == OPEN_TICKETS
    labels = [row["response"]["label"] for row in out]
    assert set(labels) <= {"billing", "bug", "account", "feature_request", "other"}
    right = sum(row["response"]["label"] == row["label"] for row in out)
    assert right / len(out) > 0.85  # the demo agent's keyword rules, on realistic tickets
    frame = result.to_pandas()
    assert len(frame) == OPEN_TICKETS
    assert {"response", "error", "attempts", "latency_ms", "request_fingerprint"} <= set(
        frame.columns
    )


def test_a_rerun_sends_nothing_and_a_new_prompt_resends(tmp_path: Path, agent: AgentServer) -> None:
    run_triage(tmp_path, agent)
    again = run_triage(tmp_path, agent)
    assert again.summary["sent"] == 0
    assert agent.stats().requests_total == OPEN_TICKETS
    changed = run_triage(tmp_path, agent, vars={"team": "billing"})  # the prompt names the team
    assert changed.summary["sent"] == OPEN_TICKETS
    assert pq.read_table(tmp_path / "out.parquet").num_rows == OPEN_TICKETS


def test_limit_sends_at_most_n_rows_per_run(tmp_path: Path, agent: AgentServer) -> None:
    first = run_triage(tmp_path, agent, limit=50)
    second = run_triage(tmp_path, agent, limit=50)
    assert first.summary["sent"] == second.summary["sent"] == 50
    keys = pq.read_table(tmp_path / "out.parquet")["ticket_id"].to_pylist()
    assert len(set(keys)) == len(keys) == 100


def test_row_errors_are_values_and_retry_errors_resends_only_them(tmp_path: Path) -> None:
    # The agent refuses tickets mentioning "refund" permanently: a 400 recorded in the row.
    with serve_agent(FaultConfig(permanent={"refund": 400})) as agent:
        first = run_triage(tmp_path, agent)
        failed = first.summary["errors"]
        assert 0 < failed < OPEN_TICKETS
        out = pq.read_table(tmp_path / "out.parquet").to_pylist()
        bad = [row for row in out if row["error"] is not None]
        assert len(bad) == failed
        assert all(row["response"] is None and "400" in row["error"] for row in bad)
        before = agent.stats().requests_total
        agent.configure(FaultConfig())  # the agent is fixed
        retried = run_triage(tmp_path, agent, retry_errors=True)
        assert retried.summary["sent"] == failed
        assert agent.stats().requests_total - before == failed
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert all(row["error"] is None for row in out)


def test_fail_on_error_fails_after_writing_and_while_the_failures_stay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fail_on_error fails the job while selected rows are failures: the run that made them, and
    a scheduled retry that sends nothing (it must not pass); the summary is printed."""
    from agentbatch.cli.main import main

    job = tmp_path / "jobs" / "strict.yml"
    job.parent.mkdir()
    job.write_text(TRIAGE.read_text().replace("fail_on_error: false", "fail_on_error: true"))
    out = tmp_path / "out.parquet"
    args = [
        "run",
        str(job),
        "--table",
        f"main.support.tickets={TICKETS}",
        "--table",
        f"main.support.ticket_triage={out}",
        "--state-dir",
        str(tmp_path / "state"),
        "--json",
        "--no-progress",
    ]
    with serve_agent(FaultConfig(permanent={"refund": 400})) as agent:
        endpoint = ["--endpoint", f"apps/triage-agent={agent.url}"]
        assert main([*args, *endpoint]) == 1
        summary = json.loads(capsys.readouterr().out)["summary"]
        failed = summary["errors"]
        assert failed > 0 and summary["table_rows"] == OPEN_TICKETS
        assert summary["failed"].startswith(f"{failed} selected row(s) failed ({failed} this run")
        assert pq.read_table(out).num_rows == OPEN_TICKETS
        # The retry sends nothing (the failures are permanent) and fails the same way.
        with pytest.raises(JobFailedError, match=rf"\(0 this run, {failed} held from earlier"):
            agentbatch.run(
                job,
                tables={"main.support.tickets": TICKETS, "main.support.ticket_triage": out},
                endpoints={"apps/triage-agent": agent.url},
                state_dir=tmp_path / "state",
                progress=False,
            )
        assert agent.stats().requests_total == OPEN_TICKETS
    with serve_agent() as agent:
        endpoint = ["--endpoint", f"apps/triage-agent={agent.url}"]
        assert main([*args, *endpoint, "--retry-errors"]) == 0
        summary = json.loads(capsys.readouterr().out)["summary"]
        assert (summary["sent"], summary["errors"], summary["table_errors"]) == (failed, 0, 0)


def test_dry_run_calls_nothing_and_writes_nothing(tmp_path: Path, agent: AgentServer) -> None:
    result = run_triage(tmp_path, agent, dry_run=True, limit=3)
    assert agent.stats().requests_total == 0
    assert not (tmp_path / "out.parquet").exists()
    assert not (tmp_path / "state").exists()
    assert len(result.dry_run_requests) == 3
    body = result.dry_run_requests[0]["body"]
    assert body["input"][0]["role"] == "user"
    assert body["input"][0]["content"].startswith(
        "Classify this support ticket for the support team."
    )
    assert body["custom_inputs"] == {"team": "support"}
    assert body["databricks_options"] == {"return_trace": True}


def test_cli_run_prints_a_summary_and_rows(tmp_path: Path, agent: AgentServer) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentbatch",
            "run",
            str(TRIAGE),
            "--json",
            *triage_cli_args(tmp_path / "out.parquet", agent.url),
            "--state-dir",
            str(tmp_path / "state"),
            "--project-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert summary["ok"] == OPEN_TICKETS
    assert "Traceback" not in done.stderr


def test_builtin_instant_agent_runs_without_http(tmp_path: Path) -> None:
    result = agentbatch.run(
        TRIAGE,
        tables={"main.support.tickets": TICKETS},
        endpoints={"apps/triage-agent": "builtin:instant"},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        progress=False,
    )
    assert result.summary["sent"] == OPEN_TICKETS
    assert (tmp_path / ".agentbatch" / "warehouse" / "main.duckdb").exists()


def test_a_request_of_another_type_is_sent_as_text(tmp_path: Path, agent: AgentServer) -> None:
    """A prompt is text to every agent: a number column as the request goes as its text, not as
    a JSON number the agent refuses."""
    source = tmp_path / "reviews.csv"
    source.write_text("review_id,stars\n1,2\n2,5\n")
    job = tmp_path / "jobs" / "stars.yml"
    job.parent.mkdir()
    job.write_text(
        "name: stars\nsource: {table: main.s.reviews, key: review_id}\nrequest: stars\n"
        "agent: {endpoint: apps/rater}\noutput: {table: main.s.answers}\n"
    )
    with agentbatch.run(
        job,
        tables={"main.s.reviews": source, "main.s.answers": tmp_path / "out.parquet"},
        endpoints={"apps/rater": agent.url},
        state_dir=tmp_path / "state",
        progress=False,
    ) as result:
        assert (result.summary["ok"], result.summary["errors"]) == (2, 0)
        rows = result.to_arrow().to_pylist()
    assert sorted(r["response"] for r in rows) == ["answer: 2", "answer: 5"]


@pytest.mark.parametrize("address", ["http://exa mple.com", "ftp://agent", "builtin:nope"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_an_endpoint_mapped_to_no_agent_address_is_a_usage_error(
    tmp_path: Path, address: str, dry_run: bool
) -> None:
    """`--endpoint NAME=...` must give an http(s) URL or a built-in agent: the dry run refuses
    what the run refuses, before anything is read or sent."""
    from agentbatch.errors import UsageError

    with pytest.raises(UsageError, match=r"--endpoint apps/triage-agent=\.\.\.: "):
        agentbatch.run(
            TRIAGE,
            tables={"main.support.tickets": TICKETS},
            endpoints={"apps/triage-agent": address},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            dry_run=dry_run,
            progress=False,
        )


def test_an_output_table_with_a_long_name_runs(tmp_path: Path) -> None:
    """Unity Catalog takes 255 characters a name; the checkpoint's file name stays short enough
    for the file system, and differs for tables whose long names differ only at the end."""
    source = tmp_path / "reviews.csv"
    source.write_text("review_id,text\n1,good\n2,bad\n")
    for ending in ("a", "b"):
        name = "main.s." + "t" * 240 + ending
        job = tmp_path / "jobs" / "long.yml"
        job.parent.mkdir(exist_ok=True)
        job.write_text(
            "name: long\nsource: {table: main.s.reviews, key: review_id}\nrequest: text\n"
            f"agent: {{endpoint: builtin:instant}}\noutput: {{table: {name}}}\n"
        )
        for sent in (2, 0):
            with agentbatch.run(
                job,
                tables={"main.s.reviews": source},
                state_dir=tmp_path / "state",
                project_dir=tmp_path,
                progress=False,
            ) as result:
                assert result.summary["sent"] == sent
    assert len(list((tmp_path / "state").glob("*.ledger.sqlite"))) == 2


def test_a_path_that_cannot_be_used_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentbatch.cli.main import main

    taken = tmp_path / "a-file"
    taken.write_text("x")
    with pytest.raises(SystemExit) as exited:  # a usage error, as argparse reports one
        main(
            [
                "run",
                str(TRIAGE),
                "--table",
                f"main.support.tickets={TICKETS}",
                "--endpoint",
                "apps/triage-agent=builtin:instant",
                "--state-dir",
                str(taken),
                "--no-progress",
            ]
        )
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.strip().splitlines()[-1].endswith(f"argument --state-dir: not a folder: '{taken}'")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"target": None}, "target must be a target's name"),
        ({"tables": "a=b"}, "tables must be a mapping"),
        ({"endpoints": "builtin:instant"}, "endpoints must be a mapping"),
        ({"options": {"limit": 1}}, "options must be agentbatch.RunOptions"),
        ({"limit": "3"}, r"limit must be a positive number of rows \(at most [0-9,]+\), not '3'"),
        # SQL's LIMIT takes a BIGINT: a larger one failed in the engine, in its words.
        ({"limit": 2**63}, r"at most 9,223,372,036,854,775,807\), not 9223372036854775808"),
    ],
)
def test_python_api_misuse_is_a_usage_error_in_its_words(
    keywords: dict[str, object], message: str
) -> None:
    from agentbatch.errors import UsageError

    with pytest.raises(UsageError, match=message):
        agentbatch.plan(TRIAGE, **keywords)  # type: ignore[arg-type]


def test_show_json_is_strict_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One JSON object a line that any JSON reader takes: NaN and infinities are null, bytes
    base64 (Python's json wrote a bare NaN and the repr `b'\\x00\\xff'`)."""
    import pyarrow as pa

    from agentbatch.cli.main import main

    table = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"x": [float("nan"), float("inf"), 1.5], "b": [b"\x00\xff", None, b"a"]}), table
    )
    assert main(["show", "main.s.t", "--table", f"main.s.t={table}", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) for line in lines
    ]
    assert rows == [
        {"x": None, "b": "AP8="},
        {"x": None, "b": None},
        {"x": 1.5, "b": "YQ=="},
    ]


def test_a_table_read_by_a_subquery_in_where_or_request_can_be_mapped(tmp_path: Path) -> None:
    """`where: "k IN (SELECT k FROM other)"`: the run said to map `other` with --table, then
    refused that mapping as a table the job does not use."""
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "q.yml"
    job.write_text(
        "name: q\n"
        "source: {table: main.t.src, key: k, columns: [txt],"
        ' where: "k IN (SELECT k FROM main.t.other)"}\n'
        "request: \"concat(txt, ' of ', (SELECT max(k) FROM main.t.other))\"\n"
        "agent: {endpoint: 'builtin:instant'}\n"
        "output: {table: main.t.out}\n"
    )
    (tmp_path / "src.csv").write_text("k,txt\n1,a\n2,b\n3,c\n")
    (tmp_path / "other.csv").write_text("k\n2\n3\n")
    tables = {"main.t.src": tmp_path / "src.csv", "main.t.other": tmp_path / "other.csv"}
    with agentbatch.run(job, tables=tables, state_dir=tmp_path / "s", progress=False) as result:
        rows = result.to_pandas().sort_values("k")
    assert rows["k"].tolist() == [2, 3]
    assert rows["response"].tolist() == ["echo: b of 3", "echo: c of 3"]


def test_a_result_kept_open_does_not_stop_later_runs_or_reads(tmp_path: Path) -> None:
    """`result = agentbatch.run(...)` kept in a notebook held the local warehouse file attached:
    every later run and read of that catalog in the process failed (DuckDB refuses a file two
    connections of one process attach)."""
    (tmp_path / "jobs").mkdir()
    for name, output in (("a", "main.t.out"), ("b", "main.t.out_b")):
        (tmp_path / "jobs" / f"{name}.yml").write_text(
            f"name: {name}\nsource: {{table: main.t.src, key: k, columns: [txt]}}\n"
            "request: txt\nagent: {endpoint: 'builtin:instant'}\n"
            f"output: {{table: {output}}}\n"
        )
    (tmp_path / "src.csv").write_text("k,txt\n1,a\n2,b\n")
    options = {"tables": {"main.t.src": tmp_path / "src.csv"}, "project_dir": tmp_path}
    first = agentbatch.run(tmp_path / "jobs" / "a.yml", progress=False, **options)
    again = agentbatch.run(tmp_path / "jobs" / "a.yml", progress=False, **options)
    other = agentbatch.run(tmp_path / "jobs" / "b.yml", progress=False, **options)
    assert (again.summary["sent"], other.summary["sent"]) == (0, 2)
    assert len(first.to_pandas(whole_table=True)) == len(other.to_pandas()) == 2
    read = agentbatch.read_table("main.t.out", project_dir=tmp_path)
    assert sorted(read.column("k").to_pylist()) == [1, 2]
    for result in (first, again, other):
        result.close()


def test_a_results_rows_are_this_runs_read_with_a_limit(tmp_path: Path) -> None:
    """`to_arrow(limit=)` (the CLI prints the first rows of every run) gets this run's rows from
    the engine, filtered and limited there; rows written by an earlier run are not among them."""
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "a.yml"
    job.write_text(
        "name: a\nsource: {table: main.t.src, key: k, columns: [txt]}\n"
        "request: txt\nagent: {endpoint: 'builtin:instant'}\noutput: {table: main.t.out}\n"
    )
    source = tmp_path / "src.csv"
    source.write_text("k,txt\n" + "".join(f"{k},t{k}\n" for k in range(10)))
    options = {"tables": {"main.t.src": source}, "project_dir": tmp_path, "progress": False}
    with agentbatch.run(job, **options) as first:
        assert first.to_arrow(limit=4).num_rows == 4
    source.write_text(source.read_text() + "10,t10\n11,t11\n12,t12\n")
    with agentbatch.run(job, **options) as second:
        assert second.summary["sent"] == 3
        assert sorted(second.to_arrow(limit=5).column("k").to_pylist()) == [10, 11, 12]
        assert second.to_arrow(limit=2).num_rows == 2
        assert second.to_arrow(whole_table=True, limit=5).num_rows == 5
        assert len(second.to_pandas(whole_table=True)) == 13


@pytest.mark.parametrize("output", ["new/answers.parquet", "new/answers", None])
@pytest.mark.parametrize("command", ["run", "estimate"])
def test_a_run_refused_for_its_credentials_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str | None, command: str
) -> None:
    """No workspace credentials for the job's endpoint: refused before the engine opens, so
    neither the output's folder nor its lock (`.<name>.lock`), the local warehouse or the
    checkpoint is made, whether the output is a Parquet file, a Delta folder or the local
    warehouse's table."""
    from agentbatch.errors import ConfigError
    from tests.support.databricks_env import isolate

    isolate(monkeypatch, tmp_path / "auth")
    project = tmp_path / "project"
    project.mkdir()
    (project / "reviews.csv").write_text("review_id,text\n1,good\n2,bad\n")
    job = project / "reviews.yml"
    job.write_text(
        "name: reviews\nsource: {table: main.shop.reviews, key: review_id, columns: [text]}\n"
        "request: text\nagent: {endpoint: apps/reviewer}\n"
        "output: {table: main.shop.review_answers, mode: merge}\n"
    )
    before = sorted(project.rglob("*"))
    tables = {"main.shop.reviews": project / "reviews.csv"}
    if output is not None:
        tables["main.shop.review_answers"] = project / output
    go = agentbatch.run if command == "run" else agentbatch.estimate
    with pytest.raises(ConfigError, match="not configured"):
        go(job, tables=tables, project_dir=project, progress=False)
    assert sorted(project.rglob("*")) == before


@pytest.mark.parametrize("on_databricks", [False, True])
def test_the_checkpoint_lives_on_local_disk_on_databricks_compute(
    tmp_path: Path, agent: AgentServer, on_databricks: bool
) -> None:
    """Without --state-dir the checkpoint is the project's `.agentbatch/state`; on Databricks
    compute (`DATABRICKS_RUNTIME_VERSION` set, as the runtime sets it) it is the driver's temp
    folder instead: a notebook's project is a workspace folder (a FUSE mount, files over 256 MB
    refused), and the next run there reuses it alike."""
    from tests.support.cli import agentbatch as cli

    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "triage.yml").write_text(TRIAGE.read_text(encoding="utf-8"))
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    if on_databricks:
        env["DATABRICKS_RUNTIME_VERSION"] = "15.4"
    args = (
        "run",
        "jobs/triage.yml",
        *triage_cli_args(tmp_path / "out.parquet", agent.url),
        "--limit",
        "5",
    )
    first = cli(project, *args, **env)
    assert first.returncode == 0, first.stderr
    in_project = list((project / ".agentbatch" / "state").glob("*.ledger.sqlite"))
    in_temp = list(temp.glob("agentbatch-*/state/*.ledger.sqlite"))
    assert (len(in_project), len(in_temp)) == ((0, 1) if on_databricks else (1, 0))
    # The checkpoint is where the next run looks: the output dropped, its rows come from there.
    (tmp_path / "out.parquet").unlink()
    again = cli(project, *args, **env)
    assert again.returncode == 0, again.stderr
    assert agent.stats().requests_total == 5
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 5


def test_the_databricks_checkpoint_folder_needs_no_user_name(tmp_path: Path) -> None:
    """A process whose uid has no name (a container's bare uid, no LOGNAME or USER) still gets its
    own checkpoint folder on Databricks compute, named by the uid."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("needs root and setpriv (util-linux) to run as a uid without a name")
    uid = 54321  # no passwd entry here: getpass.getuser() raises
    tmp_path.chmod(0o777)
    # Read access everywhere kept, so the interpreter and this checkout stay readable.
    keep = "+dac_read_search,+dac_override"
    code = (
        "from pathlib import Path; from agentbatch.execution.runner import default_state_dir; "
        "print(default_state_dir(Path('.')))"
    )
    done = subprocess.run(
        [
            *["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"],
            *[f"--inh-caps={keep}", f"--ambient-caps={keep}", sys.executable, "-c", code],
        ],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(TRIAGE.parents[1]),
            "TMPDIR": str(tmp_path),
            "DATABRICKS_RUNTIME_VERSION": "15.4",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / f"agentbatch-{uid}" / "state")
