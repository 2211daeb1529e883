"""A parallel processor in the style of the OpenAI cookbook's `api_request_parallel_processor.py`:
requests streamed from a JSON-lines file, request and token buckets refilled continuously, a retry
queue, a pause after a rate-limit error, every result appended to a JSON-lines file.

Written for this benchmark in that style (not copied). Kept from the original on purpose: the main
loop sleeps 1 ms per turn and starts at most one request per turn; the buckets start full (a
minute's worth); any 429 pauses new requests for 15 s. A competent user's adaptations: one shared
`ClientSession` (the original opens one per request), and a 429 is recognised by its status code
(Databricks' message does not say "rate limit").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clients.base import MODEL, ClientConfig, Counts, Job

SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR = 15.0
SECONDS_TO_SLEEP_EACH_LOOP = 0.001
# A token budget far above what the rows need: only the request bucket binds.
MAX_TOKENS_PER_MINUTE = 100_000_000


@dataclass
class StatusTracker:
    num_tasks_started: int = 0
    num_tasks_in_progress: int = 0
    num_tasks_succeeded: int = 0
    num_tasks_failed: int = 0
    num_rate_limit_errors: int = 0
    num_api_errors: int = 0
    num_other_errors: int = 0
    time_of_last_rate_limit_error: float = 0.0


@dataclass
class APIRequest:
    task_id: int
    request_json: dict[str, Any]
    token_consumption: int
    attempts_left: int
    metadata: dict[str, Any]
    result: list[str] = field(default_factory=list)

    async def call_api(
        self,
        session: Any,
        request_url: str,
        retry_queue: asyncio.Queue[APIRequest],
        save_filepath: Path,
        status_tracker: StatusTracker,
        stream: bool,
    ) -> None:
        import aiohttp

        error: str | None = None
        try:
            async with session.post(request_url, json=self.request_json) as reply:
                if reply.status == 429:
                    status_tracker.time_of_last_rate_limit_error = time.time()
                    status_tracker.num_rate_limit_errors += 1
                    error = f"HTTP 429: {await reply.text()}"
                elif reply.status != 200:
                    status_tracker.num_api_errors += 1
                    error = f"HTTP {reply.status}: {await reply.text()}"
                else:
                    text = await reply.text()
                    answer = _streamed_text(text) if stream else _output_text(json.loads(text))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            status_tracker.num_other_errors += 1
            error = f"{type(e).__name__}: {e}"
        if error is not None:
            self.result.append(error)
            if self.attempts_left:
                retry_queue.put_nowait(self)
            else:
                _append_to_jsonl([self.request_json, self.result, self.metadata], save_filepath)
                status_tracker.num_tasks_in_progress -= 1
                status_tracker.num_tasks_failed += 1
            return
        _append_to_jsonl([self.request_json, answer, self.metadata], save_filepath)
        status_tracker.num_tasks_in_progress -= 1
        status_tracker.num_tasks_succeeded += 1


async def process_api_requests_from_file(
    requests_filepath: Path,
    save_filepath: Path,
    request_url: str,
    max_requests_per_minute: float,
    max_tokens_per_minute: float,
    max_attempts: int,
    max_rows: int,
    stream: bool,
    time_budget_s: float | None = None,
) -> StatusTracker:
    import aiohttp

    retry_queue: asyncio.Queue[APIRequest] = asyncio.Queue()
    task_ids = iter(range(1_000_000_000))
    status_tracker = StatusTracker()
    next_request: APIRequest | None = None
    available_request_capacity = max_requests_per_minute
    available_token_capacity = max_tokens_per_minute
    last_update_time = time.time()
    deadline = time.time() + time_budget_s if time_budget_s else None
    file_not_finished = True
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    with requests_filepath.open() as file:
        requests: Iterator[str] = iter(file)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                if deadline is not None and time.time() > deadline:
                    break  # out of time: count what is done
                # Next request: a retry first, else the next line of the file.
                if next_request is None:
                    if not retry_queue.empty():
                        next_request = retry_queue.get_nowait()
                    elif file_not_finished:
                        line = next(requests, None)
                        if line is None or status_tracker.num_tasks_started >= max_rows:
                            file_not_finished = False
                        else:
                            item = json.loads(line)
                            body: dict[str, Any] = {
                                "model": MODEL,
                                "input": [{"role": "user", "content": item["prompt"]}],
                            }
                            if stream:
                                body["stream"] = True
                            next_request = APIRequest(
                                task_id=next(task_ids),
                                request_json=body,
                                token_consumption=len(item["prompt"]) // 4 + 1,
                                attempts_left=max_attempts,
                                metadata={"id": item["id"]},
                            )
                            status_tracker.num_tasks_started += 1
                            status_tracker.num_tasks_in_progress += 1

                # Refill the buckets for the time since the last turn.
                current_time = time.time()
                seconds_since_update = current_time - last_update_time
                available_request_capacity = min(
                    available_request_capacity
                    + max_requests_per_minute * seconds_since_update / 60.0,
                    max_requests_per_minute,
                )
                available_token_capacity = min(
                    available_token_capacity + max_tokens_per_minute * seconds_since_update / 60.0,
                    max_tokens_per_minute,
                )
                last_update_time = current_time

                if next_request is not None:
                    tokens = next_request.token_consumption
                    if available_request_capacity >= 1 and available_token_capacity >= tokens:
                        available_request_capacity -= 1
                        available_token_capacity -= tokens
                        next_request.attempts_left -= 1
                        task = asyncio.create_task(
                            next_request.call_api(
                                session,
                                request_url,
                                retry_queue,
                                save_filepath,
                                status_tracker,
                                stream,
                            )
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        next_request = None

                if status_tracker.num_tasks_in_progress == 0:
                    break

                await asyncio.sleep(SECONDS_TO_SLEEP_EACH_LOOP)

                # After a rate-limit error, give the endpoint time to cool down.
                since_rate_limit = time.time() - status_tracker.time_of_last_rate_limit_error
                if since_rate_limit < SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR:
                    await asyncio.sleep(SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR - since_rate_limit)
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return status_tracker


def prepare(config: ClientConfig) -> Job:
    import aiohttp  # noqa: F401  (imports are set-up, untimed, for every client)

    rate = config.requests_per_s or (config.concurrency or 64) * 20.0
    save = Path(config.workdir) / "results.jsonl"

    def run() -> Counts:
        tracker = asyncio.run(
            process_api_requests_from_file(
                config.requests_path,
                save,
                config.url + "/responses",
                max_requests_per_minute=rate * 60.0,
                max_tokens_per_minute=MAX_TOKENS_PER_MINUTE,
                max_attempts=config.max_retries + 1,
                max_rows=config.rows,
                stream=config.stream,
                time_budget_s=config.time_budget_s,
            )
        )
        return Counts(
            rows=tracker.num_tasks_started,
            ok=tracker.num_tasks_succeeded,
            failed=tracker.num_tasks_failed,
            unfinished=tracker.num_tasks_in_progress,
        )

    return run


def _append_to_jsonl(data: Any, filename: Path) -> None:
    with filename.open("a") as out:
        out.write(json.dumps(data) + "\n")


def _output_text(body: dict[str, Any]) -> str:
    parts = [
        part.get("text", "")
        for item in body.get("output", [])
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    ]
    return "".join(parts)


def _streamed_text(text: str) -> str:
    deltas = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            event = json.loads(line[5:])
            if event.get("type") == "response.output_text.delta":
                deltas.append(event.get("delta", ""))
    return "".join(deltas)
