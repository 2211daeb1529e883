"""The example image job over a local folder: `read_files(..., format => 'binaryFile')` read by
DuckDB, every file sent to the demo agent (a real server on 127.0.0.1) as a content part, every
answer checked against the image's bytes; a changed file is sent again, an oversized file is an
error row; a job the API cannot carry is refused at load, naming file and line."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import AgentbatchError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.images import make_png, sample_answer, sample_image, write_sample_folder

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "describe_images.yml"
VOLUME = "/Volumes/main/shop/photos"
COUNT = 36


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent(minimal=True) as server:  # MLflow AgentServer's validation, as on Apps
        yield server


def run_images(
    tmp_path: Path, agent: AgentServer, job: Path = JOB, **kwargs: Any
) -> dict[str, Any]:
    result = agentbatch.run(
        job,
        tables={
            VOLUME: tmp_path / "photos",
            "main.shop.photo_descriptions": tmp_path / "out.parquet",
        },
        endpoints={"apps/vision-agent": agent.url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        progress=False,
        **kwargs,
    )
    summary = dict(result.summary)
    result.close()
    return summary


def answers(tmp_path: Path) -> dict[str, dict[str, Any]]:
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    return {Path(row["path"]).name: row for row in rows}


def test_every_file_is_answered_from_its_bytes(tmp_path: Path, agent: AgentServer) -> None:
    write_sample_folder(tmp_path / "photos", COUNT)
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"hidden")  # skipped, as read_files does
    (tmp_path / "photos" / "_SUCCESS").write_bytes(b"")
    summary = run_images(tmp_path, agent)
    assert summary["sent"] == summary["ok"] == summary["table_rows"] == COUNT
    assert agent.stats().requests_total == COUNT
    rows = answers(tmp_path)
    assert sorted(rows) == sorted(sample_image(i)[0] for i in range(COUNT))
    for index in range(COUNT):
        row = rows[sample_image(index)[0]]
        assert row["error"] is None
        assert row["response"] == sample_answer(index)
        assert row["length"] == len(sample_image(index)[1])
    assert "content" not in pq.read_schema(tmp_path / "out.parquet").names  # bytes stay out

    again = run_images(tmp_path, agent)
    assert again["skipped"] == COUNT and again["rows"] == 0
    assert agent.stats().requests_total == COUNT


def test_a_changed_file_is_sent_again_and_only_it(tmp_path: Path, agent: AgentServer) -> None:
    write_sample_folder(tmp_path / "photos", 6)
    run_images(tmp_path, agent)
    name = sample_image(2)[0]
    (tmp_path / "photos" / name).write_bytes(make_png(9, 4, (1, 2, 3), accent=(9, 9, 9)))
    summary = run_images(tmp_path, agent)
    assert summary["sent"] == 1 and summary["skipped"] == 5
    assert answers(tmp_path)[name]["response"] == "png 9x4 #010203"


def test_an_oversized_file_is_an_error_row_naming_its_size(
    tmp_path: Path, agent: AgentServer
) -> None:
    write_sample_folder(tmp_path / "photos", 4)
    big = make_png(4, 4, (0, 0, 0), padding=5_000)
    (tmp_path / "photos" / "big.png").write_bytes(big)
    job = tmp_path / "jobs" / "describe_images.yml"
    job.parent.mkdir()
    job.write_text(JOB.read_text().replace("  name: path", "  name: path\n  max_bytes: 4000"))
    summary = run_images(tmp_path, agent, job)
    assert summary["ok"] == 4 and summary["errors"] == 1
    assert agent.stats().requests_total == 4  # never sent
    row = answers(tmp_path)["big.png"]
    assert row["response"] is None
    assert row["error"] == (
        f"[permanent] file is {len(big)} bytes, over the limit of 4000 bytes "
        "(files.max_bytes); it was not sent"
    )


def test_a_raised_limit_sends_only_the_files_that_were_over_it(
    tmp_path: Path, agent: AgentServer
) -> None:
    """Run after run, the limit changing: a file under it is paid once whatever the limit; a
    file over it is an error row until the limit lets it through, then sent once."""
    write_sample_folder(tmp_path / "photos", 4)
    big = make_png(4, 4, (0, 0, 0), padding=5_000)
    (tmp_path / "photos" / "big.png").write_bytes(big)
    job = tmp_path / "jobs" / "describe_images.yml"
    job.parent.mkdir()

    def run_with_limit(limit: int) -> dict[str, Any]:
        job.write_text(
            JOB.read_text().replace("  name: path", f"  name: path\n  max_bytes: {limit}")
        )
        return run_images(tmp_path, agent, job)

    first = run_with_limit(4_000)
    assert (first["ok"], first["errors"]) == (4, 1)
    assert "over the limit of 4000 bytes" in answers(tmp_path)["big.png"]["error"]
    assert run_with_limit(4_000)["sent"] == 0  # the same limit: nothing to do
    lowered = run_with_limit(3_000)  # still over: its error row names the new limit, no call
    assert (lowered["rows"], lowered["sent"], lowered["skipped"], lowered["errors"]) == (1, 0, 4, 1)
    assert "over the limit of 3000 bytes" in answers(tmp_path)["big.png"]["error"]
    assert agent.stats().requests_total == 4

    raised = run_with_limit(1_000_000)
    assert (raised["sent"], raised["skipped"], raised["ok"]) == (1, 4, 1)
    assert agent.stats().requests_total == 5  # only the big file, once
    rows = answers(tmp_path)
    assert rows["big.png"]["error"] is None
    assert rows["big.png"]["response"] == "png 4x4 #000000"
    assert len(rows) == 5
    assert run_with_limit(2_000_000)["sent"] == 0  # under both limits: never paid again
    assert agent.stats().requests_total == 5


def test_a_file_whose_media_type_is_unknown_is_an_error_row(
    tmp_path: Path, agent: AgentServer
) -> None:
    write_sample_folder(tmp_path / "photos", 2)
    (tmp_path / "photos" / "notes").write_bytes(b"no extension")
    summary = run_images(tmp_path, agent)
    assert summary["ok"] == 2 and summary["errors"] == 1
    assert "cannot tell the media type of" in answers(tmp_path)["notes"]["error"]


def test_a_volume_path_that_is_not_mapped_says_how_to_map_it(tmp_path: Path) -> None:
    with pytest.raises(AgentbatchError, match=r"--table /Volumes/main/shop/photos=FOLDER"):
        agentbatch.run(
            JOB,
            endpoints={"apps/vision-agent": "builtin:instant"},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            dry_run=True,
        )


def load(tmp_path: Path, *changes: tuple[str, str]) -> object:
    from agentbatch.spec.loader import load_job

    text = JOB.read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "describe_images.yml"
    path.write_text(text)
    return load_job(path)


CHAT = ("  endpoint: apps/vision-agent", "  endpoint: apps/vision-agent\n  api: chat")
PDF = ("  name: path", "  name: path\n  media_type: application/pdf")


def test_a_request_mapping_cannot_carry_files(tmp_path: Path) -> None:
    with pytest.raises(
        AgentbatchError, match=r"describe_images\.yml:\d+: files: .*request mapping"
    ):
        load(tmp_path, ('request: "', 'request:\n  prompt: "'))


def test_chat_with_a_declared_document_type_is_refused(tmp_path: Path) -> None:
    load(tmp_path, CHAT)  # chat carries images
    load(tmp_path, PDF)  # responses carries documents (input_file)
    with pytest.raises(
        AgentbatchError, match=r"describe_images\.yml:\d+: files: .*chat carries images only"
    ):
        load(tmp_path, CHAT, PDF)


def test_files_need_a_name_or_a_media_type(tmp_path: Path) -> None:
    with pytest.raises(AgentbatchError, match=r"describe_images\.yml:\d+: files: .*media_type"):
        load(
            tmp_path,
            (
                "  name: path                # the media type comes from the file name (.png -> image/png)\n",
                "",
            ),
        )


def test_a_local_folder_given_as_the_photos_var_works_too(
    tmp_path: Path, agent: AgentServer
) -> None:
    folder = write_sample_folder(tmp_path / "elsewhere", 3)
    with agentbatch.run(
        JOB,
        vars={"photos": str(folder)},
        tables={"main.shop.photo_descriptions": tmp_path / "out.parquet"},
        endpoints={"apps/vision-agent": agent.url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        progress=False,
    ) as result:
        assert result.summary["ok"] == 3
    assert {row["response"] for row in answers(tmp_path).values()} == {
        sample_answer(i) for i in range(3)
    }


def test_a_dry_run_shows_the_parts_without_megabytes_and_sends_nothing(
    tmp_path: Path, agent: AgentServer
) -> None:
    write_sample_folder(tmp_path / "photos", 3)
    (tmp_path / "photos" / "big.png").write_bytes(make_png(30, 30, (5, 5, 5), padding=4_000_000))
    with agentbatch.run(
        JOB,
        tables={VOLUME: tmp_path / "photos"},
        endpoints={"apps/vision-agent": agent.url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        dry_run=True,
        progress=False,
    ) as result:
        bodies = {Path(r["key"]).name: r["body"] for r in result.dry_run_requests}
    assert result.summary["rows"] == 4
    assert agent.stats().requests_total == 0
    image = bodies["image_000.png"]["input"][0]["content"][1]
    assert image["type"] == "input_image"
    assert image["image_url"].startswith("data:image/png;base64,")
    assert image["image_url"].endswith(" characters)")
    assert bodies["big.png"]["error"].startswith("[permanent] file is 4000")


def test_validate_checks_the_folder_and_the_files_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentbatch.cli.main import main

    write_sample_folder(tmp_path / "photos", 2)
    bad = tmp_path / "describe_images.yml"
    bad.write_text(JOB.read_text().replace("  content: content ", "  content: contnt "))
    for job, folder, message in [
        (JOB, tmp_path / "nowhere", "maps it to"),
        (bad, tmp_path / "photos", "files.content: column 'contnt' is not in source.query"),
    ]:
        argv = ["validate", "--target", "local", str(job), "--table", f"{VOLUME}={folder}"]
        assert main(argv) != 0
        assert message in capsys.readouterr().err
    assert (
        main(
            [
                "validate",
                "--target",
                "local",
                str(JOB),
                "--table",
                f"{VOLUME}={tmp_path / 'photos'}",
            ]
        )
        == 0
    )


def test_a_file_used_twice_in_a_statement_is_read_once_and_the_same_bytes_serve_both(
    tmp_path: Path,
) -> None:
    """The fingerprint's hash and the bytes sent come from one read: a file rewritten between
    the two uses cannot be hashed in one version and sent in another."""
    from agentbatch.engines.binary_files import FileReader

    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"one")
    second.write_bytes(b"two" * 10)
    reader = FileReader(budget=32)
    assert reader(str(first)) == b"one"
    first.write_bytes(b"changed")
    assert reader(str(first)) == b"one" and reader.reads == 1
    # Past the budget the oldest file is dropped and read again when asked for.
    assert reader(str(second)) == b"two" * 10
    assert reader(str(first)) == b"changed" and reader.reads == 3
    assert reader(None) is None


def test_connections_of_one_database_each_read_files_with_their_own_reader(
    tmp_path: Path,
) -> None:
    """DuckDB keeps a Python function for the whole database, not the object behind it: a
    connection that closed left the next one (another cursor, another engine over the same
    warehouse file) calling its freed reader, or its cache of a file since changed."""
    import duckdb
    import sqlglot

    from agentbatch.engines.binary_files import rewrite_for_duckdb

    folder = tmp_path / "volumes" / "main" / "shop" / "files"
    folder.mkdir(parents=True)
    sql = "SELECT content FROM read_files('/Volumes/main/shop/files', format => 'binaryFile')"
    database = duckdb.connect(":memory:")
    for version in range(3):
        (folder / "a.bin").write_bytes(b"v%d" % version)
        session = database.cursor()
        tree = sqlglot.parse_one(sql, read="databricks")
        rewrite_for_duckdb(tree, {"/Volumes": tmp_path / "volumes"}, session)
        assert session.execute(tree.sql(dialect="duckdb")).fetchall() == [(b"v%d" % version,)]
        session.close()
        del session
        gc.collect()
