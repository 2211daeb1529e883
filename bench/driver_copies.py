"""What copying a driver run's answers to `checkpoint_dir` costs (engines/spark/copies.py).

`python -m bench.driver_copies [--rows 5000] [--rounds 3] [--scenario S6]`: the REST fallback
on the spark target's driver (`driver:2`, the serverless path) against one loopback agent, in
interleaved rounds without and with `checkpoint_dir` (`driver:2:copies`, which goes first in
every other round), each round in a fresh workdir with the same rows. Prints each round's wall seconds and process CPU seconds, and the
ratios with copies / without (per round, then the median): the copies' writes, every 30 s, and
the fold of the folder after the run's write (one Spark job)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.clients import agentbatch_spark
from bench.clients.base import ClientConfig
from bench.data import write_table
from bench.scenarios import AGENT_SCENARIOS
from bench.server import agent_process

VARIANTS = ("driver:2", "driver:2:copies")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.driver_copies")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenario", default="S6")
    options = parser.parse_args(argv)
    scenario = next(s for s in AGENT_SCENARIOS if s.id == options.scenario)
    root = Path(tempfile.mkdtemp(prefix="driver-copies-"))
    write_table(root / "tickets.parquet", options.rows)
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    with agent_process(scenario) as agent:
        for round_ in range(options.rounds):
            figures = {}
            # Alternating which goes first: the first run of a round meets a colder process.
            for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
                workdir = root / f"{round_}-{variant.replace(':', '-')}"
                workdir.mkdir()
                config = ClientConfig(
                    url=agent.url,
                    inputs=str(root),
                    workdir=str(workdir),
                    rows=options.rows,
                    concurrency=scenario.concurrency,
                    variant=variant,
                )
                job = agentbatch_spark.prepare(config)  # untimed: the session is warm
                wall, cpu = time.perf_counter(), time.process_time()
                counts = job()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert counts.rows == options.rows, counts
                figures[variant] = (wall, cpu)
                print(f"round {round_} {variant:16} wall {wall:6.2f} s  cpu {cpu:6.2f} s")
            (base_wall, base_cpu), (wall, cpu) = figures[VARIANTS[0]], figures[VARIANTS[1]]
            ratios["wall"].append(wall / base_wall)
            ratios["cpu"].append(cpu / base_cpu)
    for name, values in ratios.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name} with copies / without: median {statistics.median(values):.2f}x ({shown})")


if __name__ == "__main__":
    main()
