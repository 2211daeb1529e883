"""The S4 memory baseline: what `agentbatch.run` imports, and nothing else. Peak RSS above this is
what the rows cost. With the variant `delta` (S4r), what a run writing a Delta output imports."""

from __future__ import annotations

import importlib

from bench.clients.agentbatch_run import run_modules
from bench.clients.base import ClientConfig, Counts, Job


def prepare(config: ClientConfig) -> Job:
    import agentbatch  # noqa: F401

    for module in run_modules(config):
        importlib.import_module(module)
    return lambda: Counts(rows=0, ok=0, failed=0)
