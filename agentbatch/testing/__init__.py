"""Loopback servers shipped with agentbatch, for tests, benchmarks and the demo.

- `serve_agent` / `AgentServer`: the fault-injecting demo agent (Databricks Apps `/responses`,
  Model Serving and `mlflow models serve` routes; three SSE styles; faults on demand).
- `serve_workspace` / `FakeWorkspace`: a fake Databricks workspace API (apps lookup, OAuth M2M,
  PATs) that the unmodified databricks-sdk talks to.

Everything binds 127.0.0.1 only. Names load lazily so `import agentbatch.testing` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgentOptions": "agentbatch.testing.agent_app",
    "AgentServer": "agentbatch.testing.agent_server",
    "serve_agent": "agentbatch.testing.agent_server",
    "FaultConfig": "agentbatch.testing.faults",
    "StatsSnapshot": "agentbatch.testing.stats",
    "TokenAuthority": "agentbatch.testing.tokens",
    "FakeApp": "agentbatch.testing.fake_workspace",
    "FakeWorkspace": "agentbatch.testing.fake_workspace",
    "serve_workspace": "agentbatch.testing.fake_workspace",
    "request_key": "agentbatch.testing.inbound",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentbatch.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
