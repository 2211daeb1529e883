"""Fixtures for the loopback servers: factories that start servers and always stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentbatch.testing.agent_app import AgentOptions
from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.tokens import TokenAuthority

MakeAgent = Callable[..., AgentServer]


@pytest.fixture
def make_agent() -> Iterator[MakeAgent]:
    started: list[AgentServer] = []

    def make(
        faults: FaultConfig | None = None,
        *,
        authority: TokenAuthority | None = None,
        **options: Any,
    ) -> AgentServer:
        server = AgentServer(faults, options=AgentOptions(**options), authority=authority)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def agent(make_agent: MakeAgent) -> AgentServer:
    """A well-behaved demo agent (no faults, no latency)."""
    return make_agent()
