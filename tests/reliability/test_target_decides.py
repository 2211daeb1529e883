"""The target decides what is done: a dropped, truncated or re-mapped target, a changed mode or
stream setting, a full refresh, transient failures and repeated keys, run after run on the local
engine against the loopback agent. The checkpoint may save calls; it never decides what is written.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import UsageError, run_summary
from agentbatch.spec.loader import load_job_text
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

from .history import ENDPOINT, OUTPUT, SOURCE, Project

ROWS = 50


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with serve_agent() as agent:
        p = Project(tmp_path, agent)
        p.write_source({i: f"review number {i}" for i in range(ROWS)})
        yield p


def one_current_row_per_key(p: Project, keys: range = range(ROWS)) -> None:
    rows = p.target()
    current = [r for r in rows if r["request_fingerprint"] is not None]
    by_key: dict[int, int] = {}
    for row in current:
        by_key[row["review_id"]] = by_key.get(row["review_id"], 0) + 1
    assert sorted(by_key) == list(keys)
    assert set(by_key.values()) == {1}


def test_a_deleted_output_is_written_again_from_paid_answers(project: Project) -> None:
    first = project.run()
    assert (first["sent"], first["table_rows"]) == (ROWS, ROWS)
    project.output.unlink()
    again = project.run()
    assert again["sent"] == 0 and again["reused"] == ROWS
    assert again["table_rows"] == ROWS
    one_current_row_per_key(project)
    assert project.agent.stats().requests_total == ROWS  # nothing paid twice


def test_a_full_refresh_calls_every_row_again(project: Project) -> None:
    project.run()
    project.output.unlink()
    project.run()
    refreshed = project.run(full_refresh=True)
    assert refreshed["sent"] == ROWS and refreshed.get("reused", 0) == 0
    assert project.agent.stats().requests_total == 2 * ROWS
    one_current_row_per_key(project)


@pytest.mark.parametrize("new_mode", ["overwrite", "append"])
def test_a_changed_mode_on_a_new_file_writes_every_row(project: Project, new_mode: str) -> None:
    project.run()
    project.settings.mode = new_mode
    project.output_file += 1
    summary = project.run()
    assert summary["table_rows"] == ROWS and summary["reused"] == ROWS
    one_current_row_per_key(project)
    assert project.agent.stats().requests_total == ROWS


def test_toggling_stream_keeps_the_answers_and_fills_a_new_file(project: Project) -> None:
    project.run()
    project.settings.stream = True
    project.output_file += 1
    summary = project.run()
    assert summary["table_rows"] == ROWS
    one_current_row_per_key(project)
    assert project.agent.stats().requests_total == ROWS


def test_a_truncated_target_and_a_lost_state_folder(project: Project) -> None:
    import shutil

    project.run()
    project.truncate_target()
    shutil.rmtree(project.state)
    summary = project.run()
    # Nothing to reuse: the rows are paid again, but every row is back in the target.
    assert summary["sent"] == ROWS and summary["table_rows"] == ROWS
    one_current_row_per_key(project)


def test_a_corrupt_checkpoint_never_changes_what_is_written(project: Project) -> None:
    project.run()
    for ledger in project.state.glob("*.sqlite"):
        ledger.write_bytes(b"this is not a database" * 100)
    project.output.unlink()
    summary = project.run()
    assert summary["table_rows"] == ROWS
    one_current_row_per_key(project)


def test_transient_failures_are_retried_by_the_next_plain_run(tmp_path: Path) -> None:
    # Every request's first two attempts fail with a 503; one retry per run is not enough.
    faults = FaultConfig(fail_first=2, fail_first_kind="unavailable", retry_after_s=0.01)
    with serve_agent(faults) as agent:
        p = Project(tmp_path, agent)
        p.write_source({**{i: f"review {i}" for i in range(9)}, 9: "PERMANENT_ERROR please"})
        first = p.run()
        assert first["errors"] == 10
        rows = {r["review_id"]: r for r in p.target()}
        assert all(rows[i]["error"].startswith("[transient] HTTP 503") for i in range(9))
        assert rows[9]["error"].startswith("[permanent] HTTP 400")
        second = p.run()
        rows = {r["review_id"]: r for r in p.target()}
        assert all(rows[i]["error"] is None for i in range(9))
        assert rows[9]["error"].startswith("[permanent] HTTP 400")
        assert (second["sent"], second["skipped"]) == (9, 1)
        third = p.run()
        assert third["sent"] == 0  # a permanent error stays...
        fourth = p.run(retry_errors=True)
        assert fourth["sent"] == 1  # ...until --retry-errors
        assert agent.stats().requests_for(request_key("Review: PERMANENT_ERROR please")) == 2
    one_current_row_per_key(p, range(10))


def test_repeated_source_keys_are_refused_before_any_call(tmp_path: Path) -> None:
    with serve_agent() as agent:
        p = Project(tmp_path, agent)
        p.source.write_text("review_id,text\n1,a\n2,b\n2,c\n3,d\n3,e\n3,f\n")
        with pytest.raises(UsageError, match=r"not unique: 2 value\(s\).*'3' x3, '2' x2"):
            p.run()
        assert agent.stats().requests_total == 0
        assert not p.output.exists()  # a refused run creates nothing, not an empty target


def test_rows_without_a_key_are_counted_and_named_never_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_agent() as agent:
        p = Project(tmp_path, agent)
        p.source.write_text("review_id,text\n1,a\n,b\n3,c\n,d\n")
        summary = p.run()
        assert (summary["selected"], summary["null_keys"], summary["sent"]) == (2, 2, 2)
        assert agent.stats().requests_total == 2
        assert sorted(r["review_id"] for r in p.target()) == [1, 3]
        assert "2 source row(s) have no 'review_id' (NULL)" in caplog.text
        p.settings.where = "text <> 'd'"
        caplog.clear()
        assert p.run()["null_keys"] == 1  # only the rows the filter keeps
        assert "1 source row(s) matching `source.where` have no 'review_id'" in caplog.text
        p.source.write_text("review_id,text\n1,a\n3,c\n")
        assert "null_keys" not in p.run()  # only said when there are some


@pytest.mark.parametrize("first", [True, False], ids=["no target yet", "after a run"])
def test_a_dry_run_refuses_and_warns_as_the_run_would(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first: bool
) -> None:
    with serve_agent() as agent:
        p = Project(tmp_path, agent)  # mode merge: its target check must not need a target
        if not first:
            p.write_source({1: "a", 3: "c"})
            p.run()
        p.source.write_text("review_id,text\n1,a\n,b\n3,c\n4,d\n")
        summary = p.run(dry_run=True)
        assert (summary["rows"], summary["null_keys"]) == (1 if not first else 3, 1)
        assert "1 source row(s) have no 'review_id' (NULL)" in caplog.text
        p.source.write_text("review_id,text\n1,a\n2,b\n2,c\n")
        with pytest.raises(UsageError, match=r"not unique: 1 value\(s\).*'2' x2"):
            p.run(dry_run=True)
        assert agent.stats().requests_total == (0 if first else 2)
        assert len(p.target()) == (0 if first else 2)  # a dry run writes nothing


def test_merge_after_append_history_is_refused_with_the_way_out(project: Project) -> None:
    project.settings.mode = "append"
    project.run()
    project.settings.prompt = "Review again"
    project.run()  # append keeps both answers per key
    assert len(project.target()) == 2 * ROWS
    project.settings.mode = "merge"
    project.settings.prompt = "Review a third time"
    with pytest.raises(UsageError, match="mode overwrite"):
        project.run()
    project.settings.mode = "overwrite"
    summary = project.run()
    assert summary["table_rows"] == ROWS
    one_current_row_per_key(project)
    project.settings.mode = "merge"
    assert project.run()["sent"] == 0
    assert project.agent.stats().requests_total == 3 * ROWS


@pytest.mark.parametrize("text_key", ["01", "x"])
@pytest.mark.parametrize(
    ("mode", "full_refresh"),
    [("merge", False), ("merge", True), ("append", False), ("append", True)],
)
def test_a_source_key_of_another_type_than_the_targets_is_refused(
    tmp_path: Path, mode: str, full_refresh: bool, text_key: str
) -> None:
    """A key read as text ('01', once a source row has one) against a target keyed by integers:
    the engine would compare them after a cast, '01' = 1, and drop a row or mix two keys up. A
    text that no cast converts ('x') failed the count's comparison in the engine's words."""
    with serve_agent() as agent:
        p = Project(tmp_path, agent)
        p.settings.mode = mode
        p.source.write_text("review_id,text\n1,one\n2,two\n")
        p.run()
        p.source.write_text(f"review_id,text\n1,one\n2,two\n{text_key},zero-one\n")
        with pytest.raises(UsageError, match=r"source key 'review_id' is VARCHAR.*as BIGINT"):
            p.run(full_refresh=full_refresh)
        with pytest.raises(UsageError, match=r"source key 'review_id' is VARCHAR.*as BIGINT"):
            p.run(dry_run=True)
        assert agent.stats().requests_total == 2
        assert sorted((r["review_id"], r["text"]) for r in p.target()) == [(1, "one"), (2, "two")]
        # The way out the message names: replace the table (mode overwrite keeps none of the
        # rows keyed by the other type, with or without a full refresh).
        p.settings.mode = "overwrite"
        p.run(full_refresh=full_refresh)
        rows = {r["review_id"]: r for r in p.target()}
        assert sorted(rows) == sorted([text_key, "1", "2"])
        assert "zero-one" in rows[text_key]["response"]
        # Integer keys of another width are the same keys: nothing refused, nothing sent again.
        p.source.write_text("review_id,text\n1,one\n2,two\n")
        p.output.unlink()
        p.run()
        sent = agent.stats().requests_total
        p.settings.mode = mode
        assert p.run()["sent"] == 0
        assert agent.stats().requests_total == sent


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # as PySpark's SparkContext handler does, in whatever code runs


@pytest.mark.parametrize(
    "handler", [signal.default_int_handler, _raise_interrupt], ids=["python", "spark-like"]
)
def test_ctrl_c_before_the_inputs_are_read_writes_what_was_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, handler: object
) -> None:
    """Ctrl-C while the inputs' query still streams (a source larger than what was handed out):
    the answers received are written, then KeyboardInterrupt; the next run finishes the rest.
    asyncio turns Python's own handler into a cancellation; another handler (a Spark session's)
    raises inside whichever task runs."""
    previous = signal.signal(signal.SIGINT, handler)  # type: ignore[arg-type]
    try:
        _ctrl_c_while_streaming(tmp_path, caplog)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_while_streaming(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = 2_000
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "signals are delivered to the main thread"
    with serve_agent(FaultConfig(latency_ms=50)) as agent:
        p = Project(tmp_path, agent)
        p.settings.max_concurrency = 4  # 80 rows/s: the producer is far from the input's end
        p.write_source({i: f"review number {i}" for i in range(rows)})

        def press_ctrl_c() -> None:
            while agent.stats().requests_total < 40:
                time.sleep(0.005)
            signal.pthread_kill(main, signal.SIGINT)

        helper = threading.Thread(target=press_ctrl_c)
        helper.start()
        with pytest.raises(KeyboardInterrupt) as stopped:
            p.run()
        helper.join()
        # The interrupt was raised to the caller: no task left to report it again when collected.
        gc.collect()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        written = p.target()
        summary = run_summary(stopped.value)
        assert summary is not None
        assert summary["rows_written"] == summary["table_rows"] == len(written)
        assert summary["rows"] == summary["ok"] >= len(written)  # the calls in flight aside
        assert len(written) >= 40 - 4  # every answer received, the calls in flight aside
        assert all(r["error"] is None for r in written)
        agent.configure(FaultConfig())
        p.settings.max_concurrency = 16
        summary = p.run()
        assert summary["table_rows"] == rows
        one_current_row_per_key(p, range(rows))
        assert agent.stats().requests_total <= rows + 4


@pytest.mark.parametrize("mode", ["merge", "append"])
def test_source_columns_edited_after_a_run_are_refused_then_overwrite_rewrites(
    tmp_path: Path, mode: str
) -> None:
    """A MERGE writes the target's columns by name: a column added to `source.columns` would
    never appear, a removed one would fail the write after the calls; reordered ones are the same
    columns."""
    with serve_agent() as agent:
        p = Project(tmp_path, agent)
        p.settings.mode = mode
        p.settings.columns = ("text", "stars")
        p.source.write_text("review_id,text,stars,lang\n1,good,5,en\n2,bad,1,nl\n")
        p.run()
        p.settings.columns = ("stars", "text")  # reordered: the same columns, by name
        p.settings.prompt = "Rate"
        p.run()
        rows = {r["review_id"]: r for r in p.target() if "Rate" in (r["response"] or "")}
        assert (rows[1]["text"], rows[1]["stars"]) == ("good", 5)
        for columns in (("text", "stars", "lang"), ("text",)):
            p.settings.columns = columns
            with pytest.raises(UsageError, match=r"columns are not the job's .*mode overwrite"):
                p.run()
        assert agent.stats().requests_total == 4
        p.settings.columns = ("text", "stars", "lang")
        p.settings.mode = "overwrite"
        assert p.run()["sent"] == 0  # the answers it held are kept
        p.settings.mode = mode
        assert p.run()["sent"] == 0
        assert sorted((r["review_id"], r["lang"]) for r in p.target()) == [(1, "en"), (2, "nl")]


@pytest.mark.parametrize("mode", ["merge", "append"])
def test_a_changed_response_format_is_refused_then_overwrite_rewrites(
    tmp_path: Path, mode: str
) -> None:
    """Typed answers into a target written with text answers (or the other way round): a MERGE
    would store each struct as the engine prints it. Refused before any call; overwrite rewrites."""
    source = tmp_path / "reviews.csv"
    source.write_text("review_id,text\n1,good\n2,bad\n")

    def run(fmt: str | None, run_mode: str = mode) -> dict[str, object]:
        typed = f'  response_format: "{fmt}"\n' if fmt else ""
        job = load_job_text(
            "name: typed\nsource: {table: main.s.reviews, key: review_id, columns: [text]}\n"
            f"request: \"concat('Rate: ', text)\"\nagent:\n  endpoint: apps/rater\n{typed}"
            f"output: {{table: main.s.answers, mode: {run_mode}}}\n",
            "typed.yml",
        )
        with agentbatch.run(
            job,
            tables={"main.s.reviews": source, "main.s.answers": tmp_path / "out.parquet"},
            endpoints={"apps/rater": "builtin:instant"},
            project_dir=tmp_path,
            state_dir=tmp_path / "state",
            progress=False,
        ) as result:
            return dict(result.summary)

    run(None)
    with pytest.raises(UsageError, match=r"holds answers as string, the job asks for struct"):
        run("STRUCT<label: STRING>")
    assert run("STRUCT<label: STRING>", "overwrite")["rows"] == 2
    with pytest.raises(UsageError, match=r"holds answers as struct<label: string>.*struct<score"):
        run("STRUCT<score: INT>")
    with pytest.raises(UsageError, match=r"holds answers as struct.*the job asks for string"):
        run(None)
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sorted(r["response"]["label"] for r in rows) == ["echo: Rate: bad", "echo: Rate: good"]
    # A field of another kind is another shape too.
    with pytest.raises(UsageError, match=r"holds answers as struct<label: string>"):
        run("STRUCT<label: INT>")
    # Overwrite rewrites the table to any other shape (fields changed, the format removed),
    # keeping none of the rows of the old shape; the job's own mode then takes it as it is.
    for fmt, shape in (("STRUCT<score: INT>", "struct<score: int32>"), (None, "string")):
        assert run(fmt, "overwrite")["rows"] == 2
        written = pq.read_table(tmp_path / "out.parquet")
        assert str(written.schema.field("response").type) == shape
        assert written.num_rows == 2
        assert run(fmt)["rows"] == 0


def test_an_overwrite_run_that_stops_early_keeps_the_rows_it_did_not_reach(
    project: Project,
) -> None:
    """Mode overwrite after an edited prompt: a run limited, or stopped by its budget, writes the
    answers it paid for and leaves every other selected key's row as it was (the next run
    answers it); only keys that left the selection are dropped."""
    from agentbatch.errors import BudgetError

    project.settings.mode = "overwrite"
    project.run()
    project.settings.prompt = "Rate"
    assert project.run(limit=5)["sent"] == 5
    rows = project.target()
    assert sorted(r["review_id"] for r in rows) == list(range(ROWS))  # none lost
    rated = [r for r in rows if r["response"].startswith("answer: Rate")]
    assert sorted(r["review_id"] for r in rated) == list(range(5))
    with pytest.raises(BudgetError) as stopped:
        project.run(settings={"max_tokens": 200})  # no estimate: guarded while sending
    summary = run_summary(stopped.value)
    assert summary is not None and 0 < summary["sent"] < ROWS - 5
    rows = project.target()
    assert sorted(r["review_id"] for r in rows) == list(range(ROWS))
    rated = {r["review_id"] for r in rows if r["response"].startswith("answer: Rate")}
    assert len(rated) == 5 + summary["sent"]
    # The source loses ten rows: those keys leave the table; the rest are answered once.
    project.write_source({i: f"review number {i}" for i in range(ROWS - 10)})
    last = project.run()
    assert last["sent"] == ROWS - 10 - len(rated & set(range(ROWS - 10)))
    one_current_row_per_key(project, range(ROWS - 10))
    assert project.agent.stats().requests_total == ROWS + len(rated) + last["sent"]


def test_an_estimate_of_an_overwrite_job_keeps_the_rows_it_did_not_sample(
    project: Project,
) -> None:
    """An estimate's sample is written like a run's answers: into an overwrite table, beside the
    rows it already holds, not instead of them."""
    project.settings.mode = "overwrite"
    project.run()
    project.settings.prompt = "Rate"
    found = agentbatch.estimate(
        project.write_job(),
        tables={"main.shop.reviews": project.source, "main.shop.review_answers": project.output},
        endpoints={"apps/reviewer": project.agent.url},
        state_dir=project.state,
        project_dir=project.root,
        sample=5,
    )
    assert found.sampled == 5
    rows = project.target()
    assert sorted(r["review_id"] for r in rows) == list(range(ROWS))
    assert sum(r["response"].startswith("answer: Rate") for r in rows) == 5
    assert project.run()["sent"] == ROWS - 5
    one_current_row_per_key(project)


@pytest.mark.parametrize("sample", [0, 2])
def test_an_estimate_of_an_overwrite_job_drops_no_row_of_a_key_gone_from_the_source(
    project: Project, sample: int
) -> None:
    """Keys that left the source leave an overwrite table at the next run, not at an estimate:
    the sample is added as the push-down estimate adds it (a merge), whatever its size."""
    project.settings.mode = "overwrite"
    project.run()
    project.write_source({i: f"review number {i}" for i in range(ROWS - 2)})
    project.settings.prompt = "Rate"
    found = agentbatch.estimate(
        project.write_job(),
        tables={"main.shop.reviews": project.source, "main.shop.review_answers": project.output},
        endpoints={"apps/reviewer": project.agent.url},
        state_dir=project.state,
        project_dir=project.root,
        sample=sample,
    )
    assert found.sampled == sample
    rows = project.target()
    assert sorted(r["review_id"] for r in rows) == list(range(ROWS))
    assert sum(r["response"].startswith("answer: Rate") for r in rows) == sample
    project.run()
    assert sorted(r["review_id"] for r in project.target()) == list(range(ROWS - 2))


def test_rows_never_sent_do_not_count_toward_max_rows(project: Project) -> None:
    """A NULL request is answered with its row error, without a call: a run sending 3 rows fits
    `max_rows: 3` however many such rows the selection holds (it was refused before any call)."""
    project.write_source({i: (None if i % 2 else f"review number {i}") for i in range(6)})
    summary = project.run(settings={"max_rows": 3})
    assert (summary["sent"], project.agent.stats().requests_total) == (3, 3)
    rows = project.target()
    assert len(rows) == 6
    assert sorted(r["error"] is None for r in rows) == [False] * 3 + [True] * 3


def test_a_changed_source_key_is_refused_then_overwrite_rewrites(tmp_path: Path) -> None:
    """source.key changed since the table was written: every statement matches rows by it, so
    merge and append are refused before any call with the way out; overwrite rewrites."""
    source = tmp_path / "reviews.csv"
    source.write_text("review_id,code,text\n1,a1,good\n2,b2,bad\n")

    def run(key: str, mode: str) -> dict[str, object]:
        job = load_job_text(
            f"name: keyed\nsource: {{table: main.s.reviews, key: {key}, columns: [text]}}\n"
            "request: \"concat('Rate: ', text)\"\nagent: {endpoint: apps/rater}\n"
            f"output: {{table: main.s.answers, mode: {mode}}}\n",
            "keyed.yml",
        )
        with agentbatch.run(
            job,
            tables={"main.s.reviews": source, "main.s.answers": tmp_path / "out.parquet"},
            endpoints={"apps/rater": "builtin:instant"},
            project_dir=tmp_path,
            state_dir=tmp_path / "state",
            progress=False,
        ) as result:
            return dict(result.summary)

    run("review_id", "merge")
    for mode in ("merge", "append"):
        with pytest.raises(UsageError, match=r"has no column 'code', the job's source.key"):
            run("code", mode)
    assert run("code", "overwrite")["table_rows"] == 2
    rows = pq.read_table(tmp_path / "out.parquet")
    assert sorted(rows["code"].to_pylist()) == ["a1", "b2"]
    assert "review_id" not in rows.column_names
    assert run("code", "merge")["rows"] == 0


@pytest.mark.parametrize("limit", [None, 1])
def test_an_overwrite_over_a_target_keyed_by_another_type_replaces_it(
    tmp_path: Path, limit: int | None
) -> None:
    """Mode overwrite never matches the source's keys with a target's of another type ('01' and 1
    would be one key): it replaces the table, keeping none of its rows, even when limited."""
    with serve_agent() as agent:
        p = Project(tmp_path, agent)
        p.settings.mode = "overwrite"
        p.source.write_text("review_id,text\n1,one\n2,two\n")
        p.run()
        p.source.write_text("review_id,text\n01,zero-one\n2x,two-x\n")
        p.run(limit=limit)
        rows = {r["review_id"]: r["response"] for r in p.target()}
        assert sorted(rows) == ["01", "2x"][: limit or 2]
        assert "zero-one" in rows["01"]


def test_an_estimate_refuses_a_target_the_next_run_replaces(project: Project) -> None:
    """Mode overwrite over a table of another shape: the next run replaces it, so an estimate
    (whose sample goes into the table) sends nothing and says why, rather than pay and fail."""
    project.settings.mode = "overwrite"
    project.run()
    job = project.write_job()
    job.write_text(
        job.read_text().replace("agent:\n", 'agent:\n  response_format: "STRUCT<label: STRING>"\n')
    )
    with pytest.raises(UsageError, match="which the next run replaces"):
        agentbatch.estimate(
            job,
            tables={
                "main.shop.reviews": project.source,
                "main.shop.review_answers": project.output,
            },
            endpoints={"apps/reviewer": project.agent.url},
            state_dir=project.state,
            project_dir=project.root,
            sample=5,
        )
    assert project.agent.stats().requests_total == ROWS


def test_an_estimate_of_an_overwrite_job_refuses_a_target_holding_a_key_twice(
    project: Project,
) -> None:
    """An overwrite job's sample is merged into the target; after an append history (a key in
    two rows, one per request) the merge gave the sampled key two rows with the same answer."""
    project.settings.mode = "append"
    project.run()
    project.write_source(
        {i: f"review number {i}" + (" (edited)" if i < 3 else "") for i in range(ROWS)}
    )
    project.run()
    before = sorted((r["review_id"], r["request_fingerprint"]) for r in project.target())
    assert len(before) == ROWS + 3
    project.write_source(
        {i: f"review number {i}" + (" (again)" if i < 3 else "") for i in range(ROWS)}
    )
    project.settings.mode = "overwrite"
    job = project.write_job()
    paid = project.agent.stats().requests_total

    def estimate() -> Any:
        return agentbatch.estimate(
            job,
            tables={
                "main.shop.reviews": project.source,
                "main.shop.review_answers": project.output,
            },
            endpoints={"apps/reviewer": project.agent.url},
            state_dir=project.state,
            project_dir=project.root,
            sample=2,
        )

    with pytest.raises(UsageError, match=r"holds 3 key\(s\) in more than one row"):
        estimate()
    assert project.agent.stats().requests_total == paid
    assert sorted((r["review_id"], r["request_fingerprint"]) for r in project.target()) == before
    project.run()  # mode overwrite: one row per key
    one_current_row_per_key(project)
    project.write_source(
        {i: f"review number {i}" + (" (third)" if i < 3 else "") for i in range(ROWS)}
    )
    assert estimate().sampled == 2
    keys = [r["review_id"] for r in project.target()]
    assert sorted(keys) == list(range(ROWS))  # the sample replaced its keys' rows


def test_a_project_template_written_for_the_old_kept_rows_still_writes_one_row_per_key(
    project: Project,
) -> None:
    """A project's `write_results.sql` copied from an earlier built-in includes `_kept.sql`
    (the rows held with the current fingerprint, disjoint from the rows answered): that partial
    keeps its meaning, so the override writes one row per key."""
    templates = project.root / "sqltemplates"
    templates.mkdir()
    old = Path(__file__).with_name("old_write_results.sql").read_text()
    (templates / "write_results.sql").write_text(old)
    project.settings.mode = "overwrite"
    project.run()
    project.settings.prompt = "Rate"
    assert project.run()["table_rows"] == ROWS
    one_current_row_per_key(project)


def test_a_full_refresh_that_stops_early_is_continued_not_paid_again(project: Project) -> None:
    """A refresh stopped by its budget (or killed) and run again pays only the rows it had not
    reached: what it already received is its own answer. A finished refresh, or a plain run in
    between, leaves nothing to continue: the next refresh pays every row."""
    from agentbatch.errors import BudgetError

    def paid_per_key() -> set[int]:
        return set(Counter(project.agent.stats().requests_by_key.values()).elements())

    project.run()
    started = datetime.now(timezone.utc)
    with pytest.raises(BudgetError) as stopped:
        project.run(full_refresh=True, settings={"max_tokens": 200})
    first = run_summary(stopped.value)
    assert first is not None and 0 < first["sent"] < ROWS
    second = project.run(full_refresh=True)
    # The stopped refresh wrote what it received: the target holds those answers since the
    # refresh began, so they are done (skipped), and the checkpoint has nothing more to give.
    assert (second["sent"], second["skipped"], second["reused"]) == (
        ROWS - first["sent"],
        first["sent"],
        0,
    )
    assert project.agent.stats().requests_total == 2 * ROWS
    assert paid_per_key() == {2}  # every request twice: the first run and one refresh
    rows = project.target()
    assert all(r["answered_at"] >= started for r in rows)  # every row refreshed
    one_current_row_per_key(project)

    assert project.run(full_refresh=True)["sent"] == ROWS  # the last refresh finished
    with pytest.raises(BudgetError):
        project.run(full_refresh=True, settings={"max_tokens": 200})
    assert project.run()["sent"] == 0  # a plain run gives the refresh up ...
    assert project.run(full_refresh=True)["sent"] == ROWS  # ... so the next one starts over
    one_current_row_per_key(project)


def test_a_killed_full_refresh_is_continued_not_paid_again(project: Project) -> None:
    """SIGKILL in the middle of a refresh: the next refresh re-sends at most the calls that were
    in flight and the answers of the last commit window (README, Performance), not every row."""
    project.run()
    project.agent.configure(FaultConfig(latency_ms=300))
    concurrency = project.settings.max_concurrency
    child = project.start_cli("--full-refresh")
    try:
        deadline = time.monotonic() + 60
        while project.agent.stats().requests_total < ROWS + 12:
            assert child.poll() is None, "the refresh ended before it was killed"
            assert time.monotonic() < deadline, "the refresh never called the agent"
            time.sleep(0.002)
        time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    received = project.agent.stats().requests_total - ROWS  # by the killed refresh
    assert received < ROWS
    project.agent.configure(FaultConfig())
    recovery = project.run(full_refresh=True)
    # In flight at the kill (at most `concurrency`), or answered within the last window
    # (0.1 s: at most `concurrency` at 0.3 s a call), may be paid again; nothing else is.
    assert recovery["sent"] <= ROWS - received + 2 * concurrency
    assert recovery["sent"] + recovery["reused"] == ROWS
    one_current_row_per_key(project)


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_limited_full_refreshes_take_turns_over_the_table(project: Project, mode: str) -> None:
    """`--full-refresh --limit N`, run again and again, refreshes the rows whose answers are
    oldest (rows with no answer first): each run new rows, until every row had its turn; not
    the same first N keys every run."""
    project.settings.mode = mode
    project.run()

    def paid() -> Counter[str]:
        return Counter(project.agent.stats().requests_by_key)

    def request_of(key: int) -> str:
        return request_key(f"Review: review number {key}")

    turns: list[set[int]] = []
    for _ in range(3):  # 20 + 20 + 10 of the 50, then 10 again: every row refreshed
        before = paid()
        summary = project.run(full_refresh=True, limit=20)
        assert summary["sent"] == 20
        sent = paid() - before
        turns.append({k for k in range(ROWS) if sent[request_of(k)]})
        assert sum(sent.values()) == 20  # no key twice in a run
    assert turns[0].isdisjoint(turns[1])
    assert len(turns[0] | turns[1] | turns[2]) == ROWS
    assert len(turns[2] & turns[0]) == 10  # the last 10, then the oldest: 10 of the first run's
    one_current_row_per_key(project)

    # A row the target holds no answer for comes first.
    project.write_source({i: f"review number {i}" for i in range(ROWS + 1)})
    before = paid()
    project.run(full_refresh=True, limit=1)
    assert paid() - before == Counter({request_of(ROWS): 1})


def test_answers_of_another_agent_are_not_reused(project: Project) -> None:
    """A trial against builtin:instant (into another output file) leaves answers in the
    checkpoint: the run against the agent pays every row and stores its answers, not the echo.
    The same agent server started again on another port of this machine is the same agent."""

    def run(url: str, output: Path) -> dict[str, object]:
        with agentbatch.run(
            project.write_job(),
            tables={SOURCE: project.source, OUTPUT: output},
            endpoints={ENDPOINT: url},
            state_dir=project.state,
            project_dir=project.root,
            progress=False,
        ) as result:
            return dict(result.summary)

    trial = run("builtin:instant", project.root / "trial.parquet")
    assert trial["sent"] == ROWS and project.agent.stats().requests_total == 0
    real = run(project.agent.url, project.output)
    assert (real["sent"], real["reused"]) == (ROWS, 0)
    assert project.agent.stats().requests_total == ROWS
    assert {r["response"] for r in project.target()} == {
        f"answer: Review: review number {i}" for i in range(ROWS)
    }
    with serve_agent() as restarted:
        assert restarted.url != project.agent.url
        again = run(restarted.url, project.root / "again.parquet")
    assert (again["sent"], again["reused"]) == (0, ROWS)


def test_an_estimate_of_a_full_refresh_is_not_paid_again_by_the_refresh(project: Project) -> None:
    """`estimate --full-refresh` keeps its sample's answers, as any estimate does: the refresh
    that follows counts them done instead of paying for those rows a second time."""
    project.run()
    found = agentbatch.estimate(
        project.write_job(),
        tables={SOURCE: project.source, OUTPUT: project.output},
        endpoints={ENDPOINT: project.agent.url},
        state_dir=project.state,
        project_dir=project.root,
        sample=5,
        full_refresh=True,
    )
    assert found.sampled == 5
    refresh = project.run(full_refresh=True)
    # The sample was written as it was paid: the target holds it since the refresh began.
    assert (refresh["sent"], refresh["skipped"], refresh["reused"]) == (ROWS - 5, 5, 0)
    assert project.agent.stats().requests_total == 2 * ROWS
    one_current_row_per_key(project)


def test_a_kill_early_in_a_run_loses_at_most_the_last_commit_window(tmp_path: Path) -> None:
    """README (Performance): a kill re-sends at most the calls in flight and the answers of the
    last 100 ms commit window (plus a commit being written). Early in a fresh process too: the
    first commit used to import pandas (about 0.4 s, holding the GIL), and a kill then lost every
    answer of the run's first half second."""
    from agentbatch.agent.bulk import COMMIT_WINDOW_S

    rows, concurrency, kill_after = 400, 8, 160
    with serve_agent(FaultConfig(latency_ms=20)) as agent:
        project = Project(tmp_path, agent)
        project.settings.max_concurrency = concurrency
        project.write_source({i: f"review number {i}" for i in range(rows)})
        child = project.start_cli()
        try:
            deadline = time.monotonic() + 60
            while agent.stats().requests_total == 0:
                assert time.monotonic() < deadline, "the run never called the agent"
                time.sleep(0.001)
            first = time.monotonic()
            while agent.stats().requests_total < kill_after:
                assert child.poll() is None, "the run ended before it was killed"
                time.sleep(0.001)
            child.send_signal(signal.SIGKILL)
            killed = time.monotonic()
        finally:
            child.kill()
            child.wait()
        received = agent.stats().requests_total
        recovery = project.run()
    rate = received / (killed - first)
    lost = received - recovery["reused"]
    # The window, a commit being written and the polling here: a quarter of a second.
    assert lost <= concurrency + rate * (COMMIT_WINDOW_S + 0.15), (lost, received, rate)
    assert recovery["sent"] + recovery["reused"] == rows
