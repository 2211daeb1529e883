"""A run killed with SIGKILL mid-way loses at most the calls in flight and the answers of the last
commit window: the re-run sends only the rows the ledger has no answer for, and the ledger holds
every key exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa

from agentbatch.agent.bulk import COMMIT_WINDOW_S, run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig

from .conftest import input_batches

ROWS = 3000
# Beyond the commit window: a commit being written when the kill lands, and the child's reply
# reading (answers that left the server a moment before the kill may not be read yet).
COMMIT_ALLOWANCE_S = 0.25

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from agentbatch.agent.bulk import run_bulk_sync
    from agentbatch.agent.calls import CallSpec
    from agentbatch.agent.ledger import Ledger
    from tests.agent.conftest import input_batches

    class Announce:
        def start(self, total):
            pass

        def update(self, stats):
            print(f"committed {stats.done}", flush=True)

        def finish(self, stats):
            pass

    url, ledger_path, rows = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    spec = CallSpec(endpoint=url, max_concurrency=64)
    requests = [f"question {i}" for i in range(rows)]
    with Ledger(ledger_path, key="id") as ledger:
        run_bulk_sync(
            input_batches(spec, requests), call=spec, key="id", ledger=ledger, progress=Announce()
        )
    """
)


async def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    # A random moment between the first tenth and the half of the rows (reported on failure):
    # the progress lines reach this process behind the child's commits, so a later moment may
    # come after the child's last row (the agent answers some 3,000 rows a second).
    kill_after = random.randint(ROWS // 10, ROWS // 2)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ledger_path = tmp_path / "ledger.sqlite"
    root = Path(__file__).resolve().parents[2]
    with serve_agent(FaultConfig(latency_ms=20, jitter_ms=10)) as server:
        child = subprocess.Popen(
            [sys.executable, str(script), server.url, str(ledger_path), str(ROWS)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        try:
            assert child.stdout is not None
            for line in child.stdout:
                if int(line.split()[1]) >= kill_after:
                    break
            killed_at = time.monotonic()
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL
        sent_before_kill = server.stats().requests_total

        with Ledger(ledger_path, key="id") as ledger:
            answered = ledger.stats()["answers"]
            # All of them when the child finished before the kill landed: nothing to lose then.
            assert kill_after <= answered <= ROWS, f"killed after {kill_after} rows"
            # Lost: the calls in flight at the kill (at most the cap, 64) and the answers of the
            # last commit window (answers that left the server within COMMIT_WINDOW_S before the
            # kill, plus a commit being written). Everything committed survives the kill.
            recent = server.left_since(killed_at - COMMIT_WINDOW_S - COMMIT_ALLOWANCE_S)
            lost = sent_before_kill - answered
            assert lost <= 64 + recent, (lost, recent)

            server.reset_stats()
            spec = CallSpec(endpoint=server.url)
            requests = [f"question {i}" for i in range(ROWS)]
            stats = await run_bulk(
                input_batches(spec, requests), call=spec, key="id", ledger=ledger
            )
            assert server.stats().requests_total == ROWS - answered
            assert stats.reused == answered and stats.sent == ROWS - answered

            table = pa.Table.from_batches(list(ledger.rows_of_run()))
            keys = table.column("id").to_pylist()
            assert sorted(keys) == list(range(ROWS))  # every key, exactly once
            assert table.column("error").null_count == ROWS
