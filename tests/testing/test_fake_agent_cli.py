"""`python -m agentbatch.testing.agent_server` as the demo and benchmarks run it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_cli_prints_its_url_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentbatch.testing.agent_server",
            "--port",
            "0",
            "--latency-ms",
            "1",
            "--capacity",
            "4",
            "--fail-first",
            "1",
            "--fail-first-kind",
            "unavailable",
            "--permanent",
            "BOOM=418",
            "--minimal",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        hi = {"input": [{"role": "user", "content": "hi"}]}
        assert _post(f"{url}/responses", hi)[0] == 503
        status, body = _post(f"{url}/responses", hi)
        assert status == 200
        assert body["output"][0]["content"][0]["text"] == "answer: hi"  # type: ignore[index]
        status, body = _post(f"{url}/responses", {"input": [{"role": "user", "content": "BOOM"}]})
        assert status == 418 and "BOOM" in str(body["detail"])
        with urllib.request.urlopen(f"{url}/_stats", timeout=10) as response:
            stats = json.loads(response.read())
        assert stats["requests_total"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr


def test_cli_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentbatch.testing.agent_server", "--p-hang", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "agent_server: FaultConfig.p_hang must be within [0, 1], got 3.0"
    )
