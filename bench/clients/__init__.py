"""The clients under test. Each module has `prepare(config) -> Job`: untimed set-up (reading the
inputs, building clients) that returns the timed part, a callable returning `Counts`."""

from __future__ import annotations

from bench.clients.base import CLIENT_NAMES, ClientConfig, Counts, Job, load_client

__all__ = ["CLIENT_NAMES", "ClientConfig", "Counts", "Job", "load_client"]
