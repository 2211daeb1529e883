"""agentbatch: run Databricks agents and models over whole tables."""

from __future__ import annotations

__version__ = "0.1.0"
