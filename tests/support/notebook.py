"""A real IPython kernel (what Databricks Python notebooks run on) for tests of runs from a cell.

IPython's kernel runs every cell inside its asyncio event loop; the kernel here is this
interpreter's, under a kernel spec of its own, so no kernel installed on the machine is used."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARK = "RESULT:"


@contextmanager
def ipython_kernel(folder: Path) -> Iterator[Any]:
    """A started kernel working in `folder`, and a client talking to it (`client.manager` is
    its KernelManager: `interrupt_kernel()` is the notebook's stop button)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = folder / "kernels" / "agentbatch-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "agentbatch test", "language": "python"})
    )
    manager = KernelManager(
        kernel_name="agentbatch-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        env.pop(name, None)
    manager.start_kernel(cwd=str(folder), env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        client.manager = manager  # type: ignore[attr-defined]  # for the stop button
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client: Any, code: str, timeout: float = 300) -> tuple[dict[str, Any], str]:
    """Run `code` as a cell; its reply and everything it printed (tracebacks included)."""
    printed: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            printed.append("\n".join(message["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=timeout, output_hook=collect)
    return reply["content"], "".join(printed)


def result_of(printed: str) -> dict[str, Any]:
    """The JSON a cell printed after `MARK`."""
    line = next(line for line in printed.splitlines() if line.startswith(MARK))
    return json.loads(line[len(MARK) :])  # type: ignore[no-any-return]
