"""Request bodies carrying a row's file: the shapes MLflow's ResponsesAgent and the OpenAI client
types accept, data URLs that decode to the very bytes, size limits and media types as row errors,
and fingerprints that follow the bytes."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from agentbatch.agent.bodies import BodyBuilder, RequestError
from agentbatch.agent.calls import CallSpec, call_fingerprint
from agentbatch.agent.content import (
    DEFAULT_MAX_FILE_BYTES,
    FileInput,
    RowFile,
    media_type_of,
)
from agentbatch.testing.images import describe, make_png
from agentbatch.testing.inbound import BadRequest, parse_json

PNG = make_png(5, 3, (10, 20, 30), accent=(1, 1, 1))
PDF = b"%PDF-1.4 tiny"


def body(api: str, file: RowFile, **files: Any) -> dict[str, Any]:
    spec = CallSpec(endpoint="apps/vision", api=api, files=FileInput(**files))  # type: ignore[arg-type]
    sent: dict[str, Any] = json.loads(BodyBuilder(spec).build("What is this?", file))
    return sent


def test_responses_image_is_an_input_image_part_mlflow_accepts() -> None:
    from mlflow.types.responses import ResponsesAgentRequest

    sent = body("responses", RowFile(PNG, "dbfs:/Volumes/main/shop/photos/a.png"))
    assert sent["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {
                    "type": "input_image",
                    "image_url": "data:image/png;base64," + base64.b64encode(PNG).decode(),
                },
            ],
        }
    ]
    ResponsesAgentRequest(**sent)  # MLflow's own validation of the request
    call = parse_json(sent)
    assert call.files == (PNG,) and call.text == "What is this?"
    assert describe(call.files[0]) == "png 5x3 #0a141e"


def test_responses_document_is_an_input_file_part_with_its_name() -> None:
    from mlflow.types.responses import ResponsesAgentRequest

    sent = body("responses", RowFile(PDF, "file:/data/invoices/march.pdf"))
    part = sent["input"][0]["content"][1]
    assert part == {
        "type": "input_file",
        "filename": "march.pdf",
        "file_data": "data:application/pdf;base64," + base64.b64encode(PDF).decode(),
    }
    ResponsesAgentRequest(**sent)
    assert parse_json(sent).files == (PDF,)


def test_chat_image_is_an_image_url_part_the_openai_types_describe() -> None:
    from openai.types.chat import ChatCompletionContentPartImageParam

    sent = body("chat", RowFile(PNG, "a.PNG"))
    text, image = sent["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }
    assert set(image) <= set(ChatCompletionContentPartImageParam.__annotations__)
    assert parse_json(sent).files == (PNG,)


def test_a_declared_media_type_wins_over_the_name() -> None:
    sent = body("responses", RowFile(PNG, "scan.bin"), media_type="image/png")
    assert sent["input"][0]["content"][1]["image_url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("api", "file", "files", "message"),
    [
        (
            "responses",
            RowFile(b"x" * 101, "a.png"),
            {"max_bytes": 100},
            "file is 101 bytes, over the limit of 100 bytes (files.max_bytes); it was not sent",
        ),
        ("chat", RowFile(PDF, "a.pdf"), {}, "the chat API carries images only"),
        ("responses", RowFile(PNG, "no_extension"), {}, "cannot tell the media type of"),
        ("responses", RowFile(b"not an image", None), {}, "a file without a name"),
    ],
)
def test_unsendable_files_are_row_errors(
    api: str, file: RowFile, files: dict[str, Any], message: str
) -> None:
    spec = CallSpec(endpoint="apps/vision", api=api, files=FileInput(**files))  # type: ignore[arg-type]
    with pytest.raises(RequestError, match=re.escape(message)):
        BodyBuilder(spec).build("What is this?", file)


def test_a_row_without_a_file_sends_its_text_only() -> None:
    assert body("responses", RowFile(None, "a.png"))["input"][0]["content"] == "What is this?"


def test_the_default_limit_keeps_a_body_under_the_4_mb_payload_limit() -> None:
    spec = CallSpec(endpoint="apps/vision", files=FileInput())
    sent = BodyBuilder(spec).build("p" * 20_000, RowFile(b"\0" * DEFAULT_MAX_FILE_BYTES, "a.png"))
    assert len(sent) < 4_000_000
    with pytest.raises(RequestError, match="over the limit"):
        BodyBuilder(spec).build("p", RowFile(b"\0" * (DEFAULT_MAX_FILE_BYTES + 1), "a.png"))


def test_call_fingerprint_covers_the_media_type_not_the_limit_and_text_jobs_keep_theirs() -> None:
    text = CallSpec(endpoint="e")
    assert call_fingerprint(text) == call_fingerprint(CallSpec(endpoint="e", files=None))
    with_files = CallSpec(endpoint="e", files=FileInput())
    assert call_fingerprint(with_files) != call_fingerprint(text)
    declared = CallSpec(endpoint="e", files=FileInput(media_type="image/png"))
    assert call_fingerprint(declared) != call_fingerprint(with_files)
    # The limit is not: a file under it gets the same answer whatever it is (a file over it
    # carries the limit in its row's fingerprint, in the inputs SQL).
    smaller = CallSpec(endpoint="e", files=FileInput(max_bytes=10))
    assert call_fingerprint(smaller) == call_fingerprint(with_files)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dbfs:/Volumes/c/s/v/photo.JPG", "image/jpeg"),
        ("file:/tmp/x/scan.png", "image/png"),
        ("invoice.pdf", "application/pdf"),
        ("noext", None),
        (None, None),
    ],
)
def test_media_type_from_the_name(name: str | None, expected: str | None) -> None:
    assert media_type_of(name) == expected


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "image_url": "https://example.invalid/a.png"},
        {"type": "input_image", "image_url": "data:image/png;base64,@@@"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,AAAA"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ],
)
def test_the_demo_agent_refuses_parts_it_cannot_read(part: dict[str, Any]) -> None:
    message = {"role": "user", "content": [{"type": "input_text", "text": "hi"}, part]}
    with pytest.raises(BadRequest):
        parse_json({"input": [message]})


def test_a_file_without_a_name_gets_its_media_type_from_its_bytes() -> None:
    from agentbatch.agent.content import sniff_media_type

    assert sniff_media_type(PNG) == "image/png"
    assert sniff_media_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_media_type(PDF) == "application/pdf"
    assert sniff_media_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_media_type(b"plain text") is None
    sent = body("chat", RowFile(PNG, None))
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;")
