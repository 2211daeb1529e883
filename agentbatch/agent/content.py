"""Binary input per row (images, documents): media types, data URLs, content parts, size limits.

A job with `files:` sends each row's bytes beside its text request:

- push-down: `ai_query(endpoint, request, files => <bytes>)`, as Databricks documents it;
- REST fallback: a content part in the user message, as a base64 data URL —
  Responses API (Apps agents, ResponsesAgent endpoints): `{"type": "input_image", "image_url":
  "data:<type>;base64,..."}` for images, `{"type": "input_file", "filename": ..., "file_data":
  "data:<type>;base64,..."}` for other files (MLflow's ResponsesAgent `Message` accepts both part
  types); Chat Completions: `{"type": "image_url", "image_url": {"url": "data:..."}}`, images only.

A row whose bytes pass `max_bytes` is an error row naming its size and the limit, never sent.
The default keeps a row's body under the 4 MB payload limit Model Serving documents for
foundation-model, external-model and agent endpoints: base64 grows the bytes by a third
(2,900,000 bytes -> 3,866,668 characters), leaving room for the prompt and the body's fields.
The fingerprint of a row covers a sha256 of its bytes (in SQL), never the bytes themselves.
"""

from __future__ import annotations

import base64
import mimetypes
import posixpath
from dataclasses import dataclass

from agentbatch.spec.models import DEFAULT_MAX_FILE_BYTES

# Columns the inputs select adds for a job with `files:` (beside `_request`); never passthrough.
FILE_COLUMN = "_file"
FILE_NAME_COLUMN = "_file_name"
FILE_COLUMNS = (FILE_COLUMN, FILE_NAME_COLUMN)

# Rows per input batch when rows carry files: memory is bounded by this times the file size,
# whatever the number of files.
FILE_BATCH_ROWS = 16


# Bytes of files the REST fallback holds in flight at most (as raw bytes, their base64 text and
# the body): the adaptive limiter's ceiling for a job with files is this over `max_bytes`.
FILES_IN_FLIGHT_BYTES = 256 * 1024 * 1024
MIN_FILE_CONCURRENCY = 8


def concurrency_ceiling(files: FileInput | None, default: int, asked: int | None = None) -> int:
    """The limiter's ceiling: `default`, or for files what keeps memory bounded by
    FILES_IN_FLIGHT_BYTES whatever the number of files; a concurrency the job asks for
    (agent.max_concurrency) is granted."""
    if files is None:
        return default
    if asked is not None:
        return asked
    fitting = FILES_IN_FLIGHT_BYTES // (4 * files.max_bytes)  # bytes, base64, body, slack
    return max(MIN_FILE_CONCURRENCY, min(default, fitting))


# Rows per input batch otherwise (the engines' default).
TEXT_BATCH_ROWS = 10_000


def input_batch_rows(files: FileInput | None) -> int:
    """Rows per input batch of the REST fallback: few when rows carry files."""
    return FILE_BATCH_ROWS if files is not None else TEXT_BATCH_ROWS


class FileError(ValueError):
    """A row's file cannot be sent (too large, unknown or unsupported media type)."""


@dataclass(frozen=True)
class FileInput:
    """How a job's per-row files are sent (the media type is part of the call fingerprint)."""

    max_bytes: int = DEFAULT_MAX_FILE_BYTES
    # Declared media type for every row; None: from each row's file name.
    media_type: str | None = None

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("FileInput.max_bytes must be >= 1")

    def fingerprint_fields(self) -> dict[str, object]:
        # Not max_bytes: a file under the limit gets the same answer whatever the limit, so
        # changing it must not pay for every file again. Only a file over it carries the limit
        # in its row's fingerprint (the inputs SQL), so raising the limit sends just those.
        return {"media_type": self.media_type}


@dataclass(frozen=True)
class RowFile:
    """One row's file: its bytes (None: the row has no file) and name (for the media type)."""

    content: bytes | None
    name: str | None = None


def media_type_of(name: str | None) -> str | None:
    """The media type a file name implies (`photo.PNG` -> `image/png`), else None."""
    if not name:
        return None
    guessed, _ = mimetypes.guess_type(_basename(name), strict=False)
    return guessed


def is_image(media_type: str) -> bool:
    return media_type.lower().startswith("image/")


def data_url(media_type: str, content: bytes) -> str:
    """`data:<media type>;base64,<bytes>` (RFC 2397)."""
    return f"data:{media_type};base64,{base64.b64encode(content).decode('ascii')}"


def check_size(content: bytes, limit: int) -> None:
    if len(content) > limit:
        raise FileError(
            f"file is {len(content)} bytes, over the limit of {limit} bytes "
            "(files.max_bytes); it was not sent"
        )


# Leading bytes of common file types, for a file without a name (ai_query's `files` has none).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


def sniff_media_type(content: bytes) -> str | None:
    """The media type the leading bytes show (PNG, JPEG, GIF, WebP, PDF), else None."""
    for magic, media_type in _MAGIC:
        if content.startswith(magic):
            return media_type
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def resolve_media_type(spec: FileInput, row: RowFile) -> str:
    declared = spec.media_type
    if declared:
        return declared
    found = media_type_of(row.name)
    if found is None and row.name is None and row.content is not None:
        found = sniff_media_type(row.content)
    if found is None:
        shown = repr(row.name) if row.name else "a file without a name"
        raise FileError(
            f"cannot tell the media type of {shown} from its name: declare files.media_type"
        )
    return found


def content_part(api: str, spec: FileInput, row: RowFile) -> dict[str, object]:
    """The content part carrying `row`'s bytes for `api`; FileError if it cannot be sent."""
    assert row.content is not None
    check_size(row.content, spec.max_bytes)
    media_type = resolve_media_type(spec, row)
    url = data_url(media_type, row.content)
    if api == "chat":
        if not is_image(media_type):
            raise FileError(
                f"the chat API carries images only (image_url parts), not {media_type}: "
                "use agent.api: responses for documents"
            )
        return {"type": "image_url", "image_url": {"url": url}}
    if is_image(media_type):
        return {"type": "input_image", "image_url": url}
    return {"type": "input_file", "filename": _basename(row.name) or "file", "file_data": url}


def row_file(row: dict[str, object]) -> RowFile | None:
    """A row's file from an inputs row (a dict), if the job has files."""
    if FILE_COLUMN not in row:
        return None
    content, name = row[FILE_COLUMN], row.get(FILE_NAME_COLUMN)
    return RowFile(
        content if isinstance(content, bytes) else None, name if isinstance(name, str) else None
    )


def shorten_data_urls(value: object, keep: int = 60) -> object:
    """`value` with every long data URL cut to its first `keep` characters and its length, for
    showing a body (a dry run) without megabytes of base64."""
    if isinstance(value, str) and value.startswith("data:") and len(value) > keep:
        return f"{value[:keep]}… ({len(value):,} characters)"
    if isinstance(value, dict):
        return {k: shorten_data_urls(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten_data_urls(v, keep) for v in value]
    return value


def text_part(api: str, text: str) -> dict[str, object]:
    return {"type": "text" if api == "chat" else "input_text", "text": text}


def _basename(name: str | None) -> str:
    if not name:
        return ""
    # Spark and Databricks list files as URIs (`file:/...`, `dbfs:/Volumes/...`).
    return posixpath.basename(name.split("?", 1)[0].rstrip("/"))


__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "FILE_BATCH_ROWS",
    "FILE_COLUMN",
    "FILE_COLUMNS",
    "FILE_NAME_COLUMN",
    "FileError",
    "FileInput",
    "RowFile",
    "concurrency_ceiling",
    "content_part",
    "data_url",
    "input_batch_rows",
    "media_type_of",
    "text_part",
]
