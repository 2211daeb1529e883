"""Profile one client on one scenario with pyinstrument (`pip install pyinstrument`):

    python -m bench.profile "agentbatch.run" S1 [--rows N] [--html out.html]

The agent server runs in its own process as in the benchmark; the client runs in this process
under the profiler, set-up excluded.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from bench.agents import prepare_inputs
from bench.clients.base import CLIENT_NAMES, load_client
from bench.scenarios import AGENT_SCENARIOS
from bench.server import agent_process
from bench.setups import setups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("client", choices=CLIENT_NAMES)
    parser.add_argument("scenario", choices=[s.id for s in AGENT_SCENARIOS])
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--html", type=Path, default=None)
    args = parser.parse_args(argv)
    from pyinstrument import Profiler

    scenario = next(s for s in AGENT_SCENARIOS if s.id == args.scenario)
    if args.rows:
        scenario = dataclasses.replace(scenario, rows=args.rows)
    setup = next(s for s in setups(scenario, (args.client,)))
    with tempfile.TemporaryDirectory(prefix="agentbatch-profile-") as tmp:
        inputs = prepare_inputs(scenario, Path(tmp))
        workdir = inputs / "profile"
        workdir.mkdir()
        with agent_process(scenario) as agent:
            config = setup.config(agent.url, str(inputs), str(workdir), scenario)
            job = load_client(args.client).prepare(config)
            profiler = Profiler(interval=0.0005, async_mode="disabled")
            with profiler:
                counts = job()
    sys.stderr.write(f"{counts}\n")
    if args.html:
        args.html.write_text(profiler.output_html(), encoding="utf-8")
    sys.stdout.write(profiler.output_text(unicode=True, show_all=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
