"""S9 files: the image example job over folders of N files of S MB each, peak RSS per size.

`python -m bench.files` (defaults: 1,000 and 10,000 files of 1 MB) writes bench/files.md.

    python -m bench.files --sizes 1000,10000 --file-mb 1
    python -m bench.files --sizes 50,200 --file-mb 0.25 --out /tmp/files.md   # a smoke run

Each file is a valid PNG (the demo agent answers its size and colour) padded with a private
chunk of zeros to S MB; the zeros are a hole in a sparse file, so 10,000 files of 1 MB take
little disk, yet every byte is read, hashed, base64-encoded and sent. Each size runs
`agentbatch.run` (local engine, REST fallback) in its own process against the demo agent in
another process; the run's peak RSS is its own high-water mark (`VmHWM`). Target: the peak for
the largest size is at most 1.5x the smallest's (memory flat in the number of files).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JOB = ROOT / "jobs" / "describe_images.yml"
TARGET_RATIO = 1.5
_CHILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class FilesResult:
    files: int
    file_bytes: int
    wall_s: float
    peak_rss_mb: float
    ok: int
    errors: int
    sent: int

    @property
    def mb_per_s(self) -> float:
        return self.files * self.file_bytes / 1e6 / self.wall_s if self.wall_s else 0.0


def padded_png_parts(file_bytes: int) -> tuple[bytes, int, bytes]:
    """(head, zeros, tail) of a PNG of `file_bytes` bytes: a 2x2 image and a zero-filled private
    chunk. The zeros are written as a hole (a sparse file)."""
    from agentbatch.testing.images import make_png

    small = make_png(2, 2, (0x1E, 0x88, 0xE5))
    signature_ihdr = small[: 8 + 25]  # signature + IHDR chunk
    rest = small[8 + 25 :]  # IDAT + IEND
    zeros = max(file_bytes - len(small) - 12, 0)
    crc = zlib.crc32(b"paDd")
    block = b"\0" * (1 << 20)
    left = zeros
    while left:
        step = min(left, len(block))
        crc = zlib.crc32(block[:step], crc)
        left -= step
    head = signature_ihdr + struct.pack(">I", zeros) + b"paDd"
    tail = struct.pack(">I", crc & 0xFFFFFFFF) + rest
    return head, zeros, tail


def write_sparse_folder(folder: Path, count: int, file_bytes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    head, zeros, tail = padded_png_parts(file_bytes)
    for index in range(count):
        with open(folder / f"image_{index:05d}.png", "wb") as out:
            out.write(head)
            out.seek(zeros, os.SEEK_CUR)
            out.write(tail)


@contextmanager
def agent_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentbatch.testing.agent_server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the agent server did not start (exit code {process.poll()})")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_CHILD = """
import json, sys, time
import agentbatch
from bench.worker import peak_rss_mb
import resource
job, folder, out, url, workdir = sys.argv[1:6]
started = time.perf_counter()
with agentbatch.run(
    job,
    vars={"photos": folder},
    tables={"main.shop.photo_descriptions": out},
    endpoints={"apps/vision-agent": url},
    state_dir=workdir + "/state",
    project_dir=workdir,
    progress=False,
) as result:
    summary = dict(result.summary)
wall = time.perf_counter() - started
print(json.dumps({"summary": summary, "wall_s": wall,
                  "peak_rss_mb": peak_rss_mb(resource.getrusage(resource.RUSAGE_SELF))},
                 default=str))
"""


def run_size(root: Path, url: str, count: int, file_bytes: int) -> FilesResult:
    folder = root / f"files-{count}"
    write_sparse_folder(folder / "photos", count, file_bytes)
    workdir = folder / "run"
    workdir.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(JOB),
            str(folder / "photos"),
            str(workdir / "out.parquet"),
            url,
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=_CHILD_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the run of {count} files failed:\n{done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary = data["summary"]
    return FilesResult(
        files=count,
        file_bytes=file_bytes,
        wall_s=float(data["wall_s"]),
        peak_rss_mb=float(data["peak_rss_mb"]),
        ok=int(summary.get("ok", 0)),
        errors=int(summary.get("errors", 0)),
        sent=int(summary.get("sent", 0)),
    )


def ratio(results: Sequence[FilesResult]) -> float:
    small = min(results, key=lambda r: r.files)
    large = max(results, key=lambda r: r.files)
    return large.peak_rss_mb / small.peak_rss_mb


def markdown(results: Sequence[FilesResult], command: str) -> str:
    lines = [
        "# S9 files: peak RSS of the image job by number of files",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}: the image example job",
        "(`jobs/describe_images.yml`) on the local engine, REST fallback to the demo agent in",
        "another process; every file read, hashed into its fingerprint, base64-encoded and sent.",
        "",
        "| files | MB each | wall s | MB/s sent | peak RSS MB | ok | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.files:,} | {r.file_bytes / 1e6:g} | {r.wall_s:,.1f} | {r.mb_per_s:,.1f} "
            f"| {r.peak_rss_mb:,.0f} | {r.ok:,} | {r.errors:,} |"
        )
    found = ratio(results)
    verdict = "met" if found <= TARGET_RATIO else "MISSED"
    lines += [
        "",
        f"Peak RSS, largest over smallest: **{found:.2f}x** (target <= {TARGET_RATIO}x: {verdict}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.files", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", default="1000,10000", help="numbers of files, e.g. 1000,10000")
    parser.add_argument("--file-mb", type=float, default=1.0, help="size of each file in MB")
    parser.add_argument("--out", type=Path, default=HERE / "files.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    file_bytes = int(args.file_mb * 1_000_000)
    command = "python -m bench.files " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="agentbatch-bench-files-") as tmp,
        agent_process() as url,
    ):
        for count in sizes:
            result = run_size(Path(tmp), url, count, file_bytes)
            sys.stderr.write(
                f"{count:,} files of {file_bytes:,} bytes: {result.wall_s:.1f} s, "
                f"peak RSS {result.peak_rss_mb:.0f} MB, ok {result.ok:,}, errors {result.errors:,}\n"
            )
            results.append(result)
    text = markdown(results, command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    sys.stdout.write(text)
    failed = any(r.ok != r.files for r in results)
    return 1 if failed or ratio(results) > TARGET_RATIO else 0


if __name__ == "__main__":
    raise SystemExit(main())
