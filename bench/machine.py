"""A description of the machine for the results: cores, memory, CPU model, Python, libraries.
Nothing that identifies the host (no hostname, no paths)."""

from __future__ import annotations

import os
import platform
from importlib import metadata

LIBRARIES = ("aiohttp", "openai", "httpx", "duckdb", "pyarrow")


def describe_machine() -> str:
    parts = [f"{os.cpu_count()} cores"]
    model = _cpu_model()
    if model:
        parts[0] += f" ({model})"
    memory = _memory_gb()
    if memory:
        parts.append(f"{memory:.1f} GB memory")
    parts.append(f"{platform.system()} {platform.machine()}")
    parts.append(f"Python {platform.python_version()}")
    versions = ", ".join(f"{name} {_version(name)}" for name in LIBRARIES)
    return "; ".join(parts) + f"; {versions}"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return None


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
