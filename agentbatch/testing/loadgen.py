"""A small load generator for the demo agent server (numbers, not assertions).

    python -m agentbatch.testing.loadgen URL --concurrency 64 --seconds 10
    python -m agentbatch.testing.loadgen URL --wave 3000   # N requests at once, all in flight

`--concurrency` runs a fixed set of workers, each sending one request after another for
`--seconds`; `--wave` sends N requests at the same moment and waits for all of them. Prints one
JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import aiohttp


@dataclass(frozen=True)
class LoadResult:
    mode: str
    concurrency: int
    requests: int
    ok: int
    statuses: dict[str, int]
    elapsed_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def _body(index: int, stream: bool) -> dict[str, object]:
    return {
        "input": [{"role": "user", "content": f"load test row {index}"}],
        "custom_inputs": {"key": f"row-{index}"},
        "stream": stream,
    }


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def _one(
    session: aiohttp.ClientSession, url: str, index: int, stream: bool, outcomes: Counter[str]
) -> float:
    started = time.perf_counter()
    try:
        async with session.post(url, json=_body(index, stream)) as response:
            await response.read()
            outcomes[str(response.status)] += 1
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        outcomes[type(error).__name__] += 1
    return (time.perf_counter() - started) * 1000.0


def _result(
    mode: str, concurrency: int, outcomes: Counter[str], latencies: list[float], elapsed: float
) -> LoadResult:
    latencies.sort()
    total = sum(outcomes.values())
    return LoadResult(
        mode=mode,
        concurrency=concurrency,
        requests=total,
        ok=outcomes.get("200", 0),
        statuses=dict(outcomes),
        elapsed_s=round(elapsed, 3),
        requests_per_s=round(total / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(_percentile(latencies, 0.50), 1),
        p99_ms=round(_percentile(latencies, 0.99), 1),
        max_ms=round(latencies[-1], 1) if latencies else 0.0,
    )


def _session(limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def sustained(
    url: str, *, concurrency: int, seconds: float, stream: bool = False
) -> LoadResult:
    """`concurrency` workers, each sending requests back to back for `seconds`."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    counter = iter(range(10**12))
    async with _session(concurrency) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                latencies.append(await _one(session, url, next(counter), stream, outcomes))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return _result("sustained", concurrency, outcomes, latencies, elapsed)


async def wave(url: str, *, size: int, stream: bool = False) -> LoadResult:
    """`size` requests sent at once; elapsed is until the last one is answered."""
    outcomes: Counter[str] = Counter()
    async with _session(size) as session:
        started = time.perf_counter()
        latencies = list(
            await asyncio.gather(*(_one(session, url, i, stream, outcomes) for i in range(size)))
        )
        elapsed = time.perf_counter() - started
    return _result("wave", size, outcomes, latencies, elapsed)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentbatch.testing.loadgen")
    parser.add_argument("url", help="base URL of the agent server")
    parser.add_argument("--path", default="/responses")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--wave", type=int, default=0, help="send N requests at once instead")
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args(argv)
    target = args.url.rstrip("/") + args.path
    if args.wave:
        result = asyncio.run(wave(target, size=args.wave, stream=args.stream))
    else:
        result = asyncio.run(
            sustained(
                target, concurrency=args.concurrency, seconds=args.seconds, stream=args.stream
            )
        )
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
