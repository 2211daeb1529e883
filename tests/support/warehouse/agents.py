"""Deterministic stand-ins for a serving endpoint, used as `ai_query` in the executors."""

from __future__ import annotations

import json
import time
from typing import Any


def echo_agent(endpoint: str, request: Any, **named: Any) -> str:
    """Answers with what it was asked; a request containing FAIL is refused."""
    if "FAIL" in json.dumps(request):
        raise RuntimeError(f"endpoint {endpoint} refused the request")
    return json.dumps({"endpoint": endpoint, "request": request, **named}, sort_keys=True)


def json_agent(endpoint: str, request: Any, **named: Any) -> str:
    """Answers a JSON object, for `returnType => 'STRUCT<...>'` calls."""
    text = request if isinstance(request, str) else json.dumps(request)
    return json.dumps({"label": text.upper(), "length": len(text)})


def slow_agent(endpoint: str, request: Any, **named: Any) -> str:
    """Takes its time per row, so a statement over many rows runs long enough to cancel."""
    time.sleep(0.05)
    return "slow"


def responses_agent(endpoint: str, request: Any, **named: Any) -> str:
    """A ResponsesAgent on Model Serving: answers the Responses shape MLflow's
    ResponsesAgentResponse has (output items with content parts, custom_outputs)."""
    items = request.get("input") if isinstance(request, dict) else None
    last = items[-1] if items else {}
    question = last.get("content") if isinstance(last, dict) else str(last)
    return json.dumps(
        {
            "object": "response",
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": f"you said: {question}"}],
                }
            ],
            "custom_outputs": {"agent": endpoint},
        }
    )
