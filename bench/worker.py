"""One client on one scenario, in its own process: `python -m bench.worker CLIENT CONFIG OUT`.

Set-up is untimed; the timed part reports wall time, process CPU time (all threads) and the
process's peak RSS, written as JSON to OUT.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import sys
import time
from dataclasses import asdict

from bench.clients.base import ClientConfig, load_client

# Set by `python -m bench.instructions`: a library whose start()/stop() bracket the timed part
# for callgrind (the client runs under valgrind with instrumentation off until then).
CALLGRIND_TOGGLE_ENV = "BENCH_CALLGRIND_TOGGLE"


def measure(name: str, config: ClientConfig) -> dict[str, object]:
    job = load_client(name).prepare(config)
    toggle = _callgrind_toggle()
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if toggle is not None:
        toggle.start()
    counts = job()
    if toggle is not None:
        toggle.stop()
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        **asdict(counts),
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "peak_rss_mb": peak_rss_mb(after),
    }


def _callgrind_toggle() -> ctypes.CDLL | None:
    path = os.environ.get(CALLGRIND_TOGGLE_ENV)
    return ctypes.CDLL(path) if path else None


def peak_rss_mb(usage: resource.struct_rusage) -> float:
    """This process's peak resident set size.

    Linux: `VmHWM`, the high-water mark of this process image. Not `ru_maxrss` (nor
    `RUSAGE_CHILDREN` in the parent): across fork and exec it keeps the parent's peak, so every
    client would report at least the benchmark runner's own size."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return usage.ru_maxrss / 1024.0  # kilobytes on Linux and the BSDs


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit("usage: python -m bench.worker CLIENT CONFIG_JSON OUT_PATH")
    name, config_json, out_path = argv
    result = measure(name, ClientConfig(**json.loads(config_json)))
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main(sys.argv[1:])
