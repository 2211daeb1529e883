"""TLS verification is on by default; turning it off is explicit and warns.

Against an HTTPS agent whose certificate is signed by a private CA: a run refuses it (the probe
before the first row stops the run naming the certificate, nothing reaches the agent); a run that trusts the CA (SSL_CERT_FILE, the
standard OpenSSL way) succeeds, so the refusal is verification and not a broken TLS stack. The only
switch is `AiohttpTransport(verify_ssl=False)` in code (no job key, no CLI flag), and it logs a
warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import agentbatch
from agentbatch.agent.transport import AiohttpTransport, TransportError
from agentbatch.errors import AgentError, SpecError
from agentbatch.spec.loader import load_job_text
from agentbatch.testing.agent_app import AgentHandlers

from .processes import run_cli
from tests.support.tls_server import Certificates, make_certificates, serve_tls_agent

BODY = json.dumps({"input": [{"role": "user", "content": "hello"}]}).encode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_agent(certs: Certificates) -> Iterator[tuple[str, AgentHandlers]]:
    with serve_tls_agent(certs) as served:
        yield served


def job_for(url: str) -> str:
    return f"""
name: tls
source: {{table: main.s.rows, key: id}}
request: "body"
agent: {{endpoint: "{url}", timeout_seconds: 5, max_retries: 2}}
output: {{table: main.s.out, mode: merge}}
"""


def test_an_untrusted_certificate_is_refused_by_default(
    tmp_path: Path, tls_agent: tuple[str, AgentHandlers]
) -> None:
    url, handlers = tls_agent
    with pytest.raises(AgentError, match=r"TLS failed.*CERTIFICATE_VERIFY_FAILED"):
        agentbatch.run(
            load_job_text(job_for(url), "tls.yml"),
            tables={
                "main.s.rows": pa.table({"id": [1, 2, 3], "body": ["a", "b", "c"]}),
                "main.s.out": tmp_path / "out.parquet",
            },
            project_dir=tmp_path,
            state_dir=tmp_path / "state",
            progress=False,
        )
    assert not (tmp_path / "out.parquet").exists()
    assert handlers.stats.snapshot().requests_total == 0  # nothing was sent in the clear


def test_a_trusted_private_ca_works_through_the_cli(
    tmp_path: Path, certs: Certificates, tls_agent: tuple[str, AgentHandlers]
) -> None:
    url, handlers = tls_agent
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "tls.yml"
    job.write_text(job_for(url))
    rows = tmp_path / "rows.csv"
    rows.write_text("id,body\n1,a\n2,b\n")
    args = ["run", str(job), "--table", f"main.s.rows={rows}", "--json"]
    args += ["--table", f"main.s.out={tmp_path / 'out.parquet'}"]
    refused = run_cli(args, cwd=tmp_path)
    assert refused.returncode == 6 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    assert "Traceback" not in refused.stderr
    trusted = run_cli(args, cwd=tmp_path, env={"SSL_CERT_FILE": str(certs.ca)})
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert json.loads(trusted.stdout)["summary"]["ok"] == 2
    assert handlers.stats.snapshot().requests_total == 2


def test_turning_verification_off_is_explicit_and_warns(
    tls_agent: tuple[str, AgentHandlers], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = tls_agent

    async def post(transport: AiohttpTransport) -> int:
        try:
            reply = await transport.post(url + "/responses", BODY, {}, stream=False, timeout_s=5)
            return reply.status
        finally:
            await transport.close()

    with caplog.at_level(logging.WARNING, logger="agentbatch"):
        with pytest.raises(TransportError) as refused:
            asyncio.run(post(AiohttpTransport()))
        assert not caplog.records  # the default is silent: it verifies
        assert refused.value.kind == "connection" and not refused.value.retryable
        assert "certificate" in str(refused.value).lower()
        assert asyncio.run(post(AiohttpTransport(verify_ssl=False))) == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("verification is OFF" in w for w in warnings), warnings


def test_no_job_key_turns_verification_off(tmp_path: Path) -> None:
    for key in ("verify_ssl: false", "verify: false", "insecure: true", "tls_verify: false"):
        spec = job_for("https://127.0.0.1:1").replace("agent: {", "agent: {" + key + ", ")
        with pytest.raises(SpecError, match="unknown key"):
            load_job_text(spec, "tls.yml")
