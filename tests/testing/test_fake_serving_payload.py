"""The demo agent's Model Serving routes refuse a request payload over 4 MB, the documented limit
for foundation-model, external-model and agent endpoints; a body carrying a file at agentbatch's
default `files.max_bytes` fits under it."""

from __future__ import annotations

import httpx

from agentbatch.agent.bodies import BodyBuilder
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.content import DEFAULT_MAX_FILE_BYTES, FileInput, RowFile
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.images import make_png

PATHS = ("/serving-endpoints/vision/invocations", "/serving-endpoints/chat/completions")


def test_serving_routes_refuse_a_payload_over_4_mb_and_take_the_default_limit() -> None:
    png = make_png(4, 4, (9, 8, 7), padding=DEFAULT_MAX_FILE_BYTES - 100)
    assert DEFAULT_MAX_FILE_BYTES - 100 < len(png) <= DEFAULT_MAX_FILE_BYTES, len(png)
    with serve_agent() as agent, httpx.Client(base_url=agent.url, timeout=60) as client:
        for path in PATHS:
            api = "chat" if "chat" in path else "responses"
            spec = CallSpec(endpoint="vision", api=api, files=FileInput())  # type: ignore[arg-type]
            fits = BodyBuilder(spec, model="vision").build("Describe it.", RowFile(png, "a.png"))
            assert len(fits) < 4_000_000
            reply = client.post(path, content=fits, headers={"Content-Type": "application/json"})
            assert reply.status_code == 200, reply.text
            assert "png 4x4 #090807" in reply.text
            over = b'{"input": "' + b"x" * 4_000_000 + b'"}'
            refused = client.post(path, content=over, headers={"Content-Type": "application/json"})
            assert refused.status_code == 413
            assert "4,000,000-byte limit" in refused.text
        # Apps agents (/responses) are not Model Serving: the rule is not theirs.
        assert client.post("/responses", content=fits).status_code == 200
