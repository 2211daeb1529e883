"""Reading a request body: which API it speaks and the text it asks about.

Bodies arrive in four shapes: OpenAI Responses (`input`), Chat (`messages`), MLflow's
traditional pyfunc (`dataframe_records`, `dataframe_split`, `inputs`, `instances`), and anything
else, which is a bad request. Parsing never raises anything but `BadRequest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Api = Literal["responses", "chat", "predictions"]
_PREDICTION_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")


class BadRequest(Exception):
    """The body cannot be answered; the message says why (it is sent back as the error)."""


@dataclass(frozen=True)
class AgentCall:
    api: Api
    # The last user message (what the echo repeats and the ticket is read from).
    text: str
    # Every instruction, system and user text together (what triage intent is read from).
    context: str
    key: str
    stream: bool = False
    structured: bool = False
    model: str | None = None
    custom_inputs: dict[str, Any] | None = None
    return_trace: bool = False
    # One text per row for the `predictions` api.
    rows: tuple[str, ...] = field(default_factory=tuple)
    # `input` was a bare string (MLflow's AgentServer refuses those: it wants messages).
    string_input: bool = False
    # Bytes of the file parts of the last user message (images, documents), in order.
    files: tuple[bytes, ...] = ()


def request_key(text: str, custom_inputs: dict[str, Any] | None = None) -> str:
    """How the server counts attempts of "the same request": `custom_inputs.key`, else a hash."""
    if custom_inputs and custom_inputs.get("key") is not None:
        return str(custom_inputs["key"])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_body(raw: bytes, *, default_model: str | None = None) -> AgentCall:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return parse_json(body, default_model=default_model)


def parse_json(body: dict[str, Any], *, default_model: str | None = None) -> AgentCall:
    custom_inputs = body.get("custom_inputs")
    if custom_inputs is not None and not isinstance(custom_inputs, dict):
        raise BadRequest("custom_inputs must be a JSON object")
    options = body.get("databricks_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("databricks_options must be a JSON object")
    common: dict[str, Any] = {
        "stream": body.get("stream") is True,
        "model": body.get("model") if isinstance(body.get("model"), str) else default_model,
        "custom_inputs": custom_inputs,
        "return_trace": options.get("return_trace") is True,
    }
    files: tuple[bytes, ...] = ()
    if "input" in body:
        text, context = _responses_texts(body["input"], body.get("instructions"))
        files = last_user_files(body["input"], "responses")
        structured = _is_json_format(_dig(body, "text", "format"))
        api: Api = "responses"
        rows: tuple[str, ...] = ()
    elif "messages" in body:
        text, context = _messages_texts(body["messages"], "messages")
        files = last_user_files(body["messages"], "chat")
        structured = _is_json_format(body.get("response_format"))
        api = "chat"
        rows = ()
    elif any(name in body for name in _PREDICTION_KEYS):
        rows = _prediction_rows(body)
        text = context = "\n".join(rows)
        structured = False
        api = "predictions"
    else:
        raise BadRequest(
            "request body needs 'input' (Responses), 'messages' (Chat) or one of "
            + ", ".join(repr(k) for k in _PREDICTION_KEYS)
        )
    return AgentCall(
        api=api,
        text=text,
        context=context,
        # Rows that differ only in their files are different requests.
        key=request_key(
            text + "".join(hashlib.sha256(f).hexdigest() for f in files), custom_inputs
        ),
        structured=structured,
        rows=rows,
        string_input=isinstance(body.get("input"), str),
        files=files,
        **common,
    )


def _responses_texts(value: Any, instructions: Any) -> tuple[str, str]:
    prefix = [instructions] if isinstance(instructions, str) else []
    if isinstance(value, str):
        return value, "\n".join([*prefix, value])
    if isinstance(value, list):
        text, context = _messages_texts(value, "input")
        return text, "\n".join([*prefix, context])
    raise BadRequest("'input' must be a string or a list of messages")


def _messages_texts(messages: Any, name: str) -> tuple[str, str]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"'{name}' must be a non-empty list of messages")
    last_user: str | None = None
    texts: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'{name}[{index}]' must be an object")
        if message.get("type", "message") != "message" or "role" not in message:
            continue  # tool calls and outputs carry no user text
        content = _content_text(message.get("content"), f"{name}[{index}].content")
        texts.append(content)
        if message["role"] == "user":
            last_user = content
    if last_user is None:
        raise BadRequest(f"'{name}' has no user message")
    return last_user, "\n".join(texts)


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "".join(parts)
    raise BadRequest(f"'{where}' must be a string or a list of content parts")


def last_user_files(messages: Any, api: str) -> tuple[bytes, ...]:
    """The bytes of the file parts of the last user message. Responses: `input_image`
    (`image_url`) and `input_file` (`file_data`); Chat: `image_url` (`{"url": ...}`). Each
    must be a base64 data URL; anything else is a bad request."""
    if not isinstance(messages, list):
        return ()
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if not isinstance(content, list):
        return ()
    found = []
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        where = f"content[{index}]"
        if api == "responses" and kind == "input_image":
            found.append(decode_data_url(part.get("image_url"), f"{where}.image_url"))
        elif api == "responses" and kind == "input_file":
            if not isinstance(part.get("filename"), str):
                raise BadRequest(f"{where}.filename must be a string")
            found.append(decode_data_url(part.get("file_data"), f"{where}.file_data"))
        elif api == "chat" and kind == "image_url":
            url = part.get("image_url")
            if not isinstance(url, dict):
                raise BadRequest(f'{where}.image_url must be an object {{"url": ...}}')
            found.append(decode_data_url(url.get("url"), f"{where}.image_url.url"))
        elif api == "chat" and kind in ("input_image", "input_file"):
            raise BadRequest(f"{where}: {kind} is a Responses part; chat takes image_url")
        elif api == "responses" and kind == "image_url":
            raise BadRequest(f"{where}: image_url is a chat part; Responses takes input_image")
    return tuple(found)


def decode_data_url(value: Any, where: str) -> bytes:
    """The bytes of `data:<media type>;base64,<data>` (RFC 2397); BadRequest otherwise."""
    if not isinstance(value, str) or not value.startswith("data:"):
        raise BadRequest(f"{where} must be a data URL (data:<type>;base64,...)")
    meta, sep, data = value[5:].partition(",")
    if not sep or not meta.endswith(";base64") or "/" not in meta:
        raise BadRequest(f"{where} must be a base64 data URL with a media type")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: the data is not valid base64") from None


def _prediction_rows(body: dict[str, Any]) -> tuple[str, ...]:
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise BadRequest("'dataframe_split' must be an object with a 'data' list")
        records: list[Any] = split["data"]
    else:
        name = next(k for k in _PREDICTION_KEYS if k in body)
        value = body[name]
        records = value if isinstance(value, list) else [value]
    return tuple(_row_text(record) for record in records)


def _row_text(record: Any) -> str:
    if isinstance(record, dict):
        return " ".join(str(value) for value in record.values())
    if isinstance(record, list):
        return " ".join(str(value) for value in record)
    return str(record)


def _dig(body: dict[str, Any], *path: str) -> Any:
    node: Any = body
    for name in path:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def _is_json_format(spec: Any) -> bool:
    return isinstance(spec, dict) and spec.get("type") in ("json_schema", "json_object")
