"""The rows every client answers: the bundled support tickets, repeated to the wanted size.

Each scenario gets one Parquet table (what agentbatch reads) and one JSON-lines file of the same
prompts (what the alternatives read, as the cookbook's processor does), so every client sends the
same text for the same row.
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

KEY = "ticket_id"
SOURCE_TABLE = "main.bench.tickets"
PROMPT_PREFIX = "Classify this support ticket: "
# The same prompt as SQL, for the job spec: agentbatch builds the request in the engine.
REQUEST_SQL = f"concat('{PROMPT_PREFIX}', subject, ' ', body)"


def prompt(subject: str, body: str) -> str:
    return f"{PROMPT_PREFIX}{subject} {body}"


def sample_tickets() -> list[tuple[str, str]]:
    """(subject, body) of the bundled sample tickets."""
    text = resources.files("agentbatch").joinpath("data/support_tickets.csv").read_text("utf-8")
    return [(row["subject"], row["body"]) for row in csv.DictReader(io.StringIO(text))]


def write_table(path: Path, rows: int) -> Path:
    """A Parquet table of `rows` tickets (`ticket_id` 1..rows, `subject`, `body`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tickets = sample_tickets()
    ids = pa.array(range(1, rows + 1), type=pa.int64())
    # Row i is ticket i mod len(tickets) (integer division of int64 arrays truncates).
    offsets = pc.subtract(ids, 1)
    which = pc.subtract(offsets, pc.multiply(pc.divide(offsets, len(tickets)), len(tickets)))
    subjects = pa.array([s for s, _ in tickets]).take(which)
    bodies = pa.array([b for _, b in tickets]).take(which)
    table = pa.table({KEY: ids, "subject": subjects, "body": bodies})
    pq.write_table(table, path, row_group_size=64 * 1024)
    return path


def write_requests(path: Path, rows: int) -> Path:
    """JSON lines `{"id": ..., "prompt": ...}` matching `write_table(..., rows)` row for row."""
    tickets = sample_tickets()
    with path.open("w", encoding="utf-8") as out:
        for index in range(rows):
            subject, body = tickets[index % len(tickets)]
            out.write(json.dumps({"id": index + 1, "prompt": prompt(subject, body)}) + "\n")
    return path


def read_requests(path: Path, limit: int | None = None) -> list[tuple[int, str]]:
    requests: list[tuple[int, str]] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and len(requests) >= limit:
                break
            item = json.loads(line)
            requests.append((int(item["id"]), str(item["prompt"])))
    return requests
