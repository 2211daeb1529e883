"""The scheduled Apps job as Databricks runs it: the bundle's wheel task parameters through the
wheel entry point, the `spark` target on compute marked serverless, the service principal read from a secret scope of the loopback
workspace. Serverless executors have no route to the agent (Databricks docs:
compute/serverless/limitations: "User-defined functions (UDFs) cannot access the internet"): here
every Python worker of the local Spark session refuses connections to the agent's port (a
`sitecustomize` on the executors' PYTHONPATH) and logs each attempt.

Each case runs in its own process (its own Spark session, whose executor environment is fixed
when it starts)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentbatch.cli.entrypoint import split_settings
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.fake_workspace import serve_workspace
from agentbatch.testing.tokens import TokenAuthority
from tests.bundle.dab_refs import (
    job_parameter_values,
    load_bundle,
    resolver,
    substitute_job_parameters,
    target_job,
)
from tests.support.databricks_env import isolated_env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
CLIENT_ID, CLIENT_SECRET, PAT = "triage-runner", "sp-secret-value-987", "dapi-job-owner-123"
ROWS = 40

NO_ROUTE = """
import os, socket
_ports = {int(p) for p in os.environ.get("AGENTBATCH_NO_ROUTE_PORTS", "").split(",") if p}
_log = os.environ.get("AGENTBATCH_NO_ROUTE_LOG")
_connect = socket.socket.connect

def connect(self, address):
    if isinstance(address, tuple) and len(address) >= 2 and address[1] in _ports:
        if _log:
            with open(_log, "a") as f:
                f.write(f"{os.getpid()} {address[1]}\\n")
        raise OSError(101, "Network is unreachable (serverless UDF)")
    return _connect(self, address)

socket.socket.connect = connect
"""


def project(tmp: Path, agent_port: int) -> Path:
    """The deployed bundle's files: the job files, and a project target for this machine's Spark
    (serverless; the bundle's --settings add the secret scope and where the fallback runs)."""
    root = tmp / "files"
    shutil.copytree(ROOT / "jobs", root / "jobs")
    block = tmp / "no_route"
    block.mkdir()
    (block / "sitecustomize.py").write_text(NO_ROUTE, encoding="utf-8")
    settings = {
        "engine": "spark",
        "master": "local[2]",
        "partitions": 2,
        "serverless": True,
        "storage": "files",
        "spark_conf": {
            "spark.executorEnv.PYTHONPATH": str(block),
            "spark.executorEnv.AGENTBATCH_NO_ROUTE_PORTS": str(agent_port),
            "spark.executorEnv.AGENTBATCH_NO_ROUTE_LOG": str(tmp / "executor-attempts.log"),
        },
    }
    (root / "agentbatch.yml").write_text(
        json.dumps({"targets": {"serverless": settings}}), encoding="utf-8"
    )
    with (tmp / "tickets.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ticket_id", "status", "subject", "body", "label"])
        for i in range(ROWS):
            out.writerow([i, "open", f"subject {i}", f"body {i}", "billing"])
    return root


def task_argv(root: Path, tmp: Path, place: str) -> list[str]:
    """The ticket_triage task's parameters from the generated bundle (target dev), as the job run
    passes them; then only what differs on this machine: the run target, the local folders, the
    source table mapped to a CSV file."""
    bundle = load_bundle()
    resolve = resolver(bundle, "dev", root)
    job = resolve(target_job(bundle, "dev", "ticket_triage"))
    params = job["tasks"][0]["python_wheel_task"]["parameters"]
    argv = substitute_job_parameters(params, job_parameter_values(job))
    settings, _ = split_settings(argv)
    assert settings["apps_secret_scope"] == "agentbatch"
    assert settings["rest_fallback_on"] == "auto"
    argv[argv.index("--target") + 1] = "serverless"
    argv[argv.index("--state-dir") + 1] = str(tmp / "state")
    checkpoint = argv.index(f"checkpoint_dir={settings['checkpoint_dir']}")
    argv[checkpoint] = f"checkpoint_dir={tmp / 'checkpoints'}"
    if place == "no-scope":  # the bundle variable set to "": no service principal
        argv[argv.index("apps_secret_scope=agentbatch")] = "apps_secret_scope="
    elif place != "auto":
        argv[argv.index("rest_fallback_on=auto")] = f"rest_fallback_on={place}"
    return [*argv, "--table", f"main.support.tickets={tmp / 'tickets.csv'}"]


def run_job(tmp: Path, ws_url: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    # The job owner's ambient credentials: the workspace accepts them, Apps would not.
    env = isolated_env(tmp, host=ws_url, token=PAT, PYSPARK_PYTHON=sys.executable)
    # How Databricks runs the wheel task: the entry point with the task's parameters as argv.
    code = "from agentbatch.cli.entrypoint import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def served(tmp: Path, place: str) -> tuple[subprocess.CompletedProcess[str], int, str]:
    authority = TokenAuthority(clients={CLIENT_ID: CLIENT_SECRET}, pats={PAT: "job-owner"})
    with (
        serve_agent(authority=authority) as agent,
        serve_workspace({"triage-agent": agent.url}, authority=authority) as ws,
    ):
        ws.put_secret("agentbatch", "client-id", CLIENT_ID)
        ws.put_secret("agentbatch", "client-secret", CLIENT_SECRET)
        port = int(agent.url.rsplit(":", 1)[1].split("/")[0])
        root = project(tmp, port)
        result = run_job(tmp, ws.url, task_argv(root, tmp, place))
        requests = agent.stats().requests_total
    log = tmp / "executor-attempts.log"
    return result, requests, log.read_text() if log.exists() else ""


def test_serverless_job_answers_every_row_from_the_driver(tmp_path: Path) -> None:
    result, requests, attempts = served(tmp_path, "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)["summary"]
    assert summary["ok"] == ROWS and summary["errors"] == 0
    assert summary["table_ok"] == ROWS
    assert requests == ROWS
    assert attempts == ""  # no agent call left an executor
    assert CLIENT_SECRET not in result.stdout + result.stderr
    # The answers were copied to the bundle's checkpoint folder (a volume: it outlives the
    # task's disk), and marked done after the write.
    (copy,) = (tmp_path / "checkpoints").glob("*/*/part-*.parquet")
    assert (copy.parent / f"done-{copy.name.split('-')[1]}").exists()
    assert sorted(pq.read_table(copy).column("ticket_id").to_pylist()) == list(range(ROWS))


def test_executors_there_have_no_route(tmp_path: Path) -> None:
    """The same run forced onto the executors reaches nothing: the emulated rule bites."""
    result, requests, attempts = served(tmp_path, "executors")
    assert requests == 0
    assert attempts.strip()  # executors tried and were refused
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_without_the_secret_scope_the_owner_pat_is_refused_before_any_row(tmp_path: Path) -> None:
    result, requests, attempts = served(tmp_path, "no-scope")
    assert result.returncode == 6, result.stderr[-2000:]  # agent unusable
    assert "accepts OAuth tokens only" in result.stderr
    assert "apps_secret_scope" in result.stderr
    assert requests == 0 and attempts == ""
    assert PAT not in result.stdout + result.stderr
