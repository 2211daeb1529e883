"""Request bodies, one per row (pure).

A text prompt becomes `{"input": [{"role": "user", "content": text}], ...}` (Responses) or
`{"messages": [...], ...}` (Chat). With `request_is_json` the row's request is a JSON object used as
the body's base (custom models, per-row custom inputs). The job's model parameters, `custom_inputs`
and `databricks_options` go at the top level; per-row values win over the job's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentbatch.agent.calls import CallSpec, _plain
from agentbatch.agent.content import FileError, RowFile, content_part, text_part
from agentbatch.agent.response_format import ResponseFormat

NULL_REQUEST = "request is NULL"


class RequestError(ValueError):
    """A row's request cannot be turned into a body (a row error, never retried)."""


# One encoder for every body: json.dumps with options builds a new one per call (a third of
# the cost of a small body). The output is the same.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


class BodyBuilder:
    """Builds the body of every row of one run; the constant part is serialised once."""

    def __init__(
        self,
        spec: CallSpec,
        *,
        model: str | None = None,
        response_format: ResponseFormat | None = None,
    ) -> None:
        self._api = spec.api
        self._request_is_json = spec.request_is_json
        self._stream = spec.stream
        self._files = spec.files
        self._model = model
        self._model_parameters: dict[str, Any] = _plain(spec.model_parameters)
        self._custom_inputs: dict[str, Any] = _plain(spec.custom_inputs)
        self._databricks_options: dict[str, Any] = _plain(spec.databricks_options)
        self._format_param: tuple[str, dict[str, Any]] | None = None
        if response_format is not None:
            if spec.api == "responses":
                self._format_param = ("text", response_format.responses_text_param())
            else:
                self._format_param = ("response_format", response_format.chat_response_format())
        tail = self._constant_fields()
        opener = (
            '{"input":[{"role":"user","content":'
            if spec.api == "responses"
            else ('{"messages":[{"role":"user","content":')
        )
        self._text_prefix = opener
        self._text_suffix = "}]" + ("," + _dumps(tail)[1:-1] if tail else "") + "}"

    def _constant_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self._model is not None:
            fields["model"] = self._model
        fields.update(self._model_parameters)
        if self._format_param is not None:
            fields[self._format_param[0]] = self._format_param[1]
        if self._custom_inputs:
            fields["custom_inputs"] = self._custom_inputs
        if self._databricks_options:
            fields["databricks_options"] = self._databricks_options
        if self._stream:
            fields["stream"] = True
        return fields

    def build(self, request: str | None, file: RowFile | None = None) -> bytes:
        """The JSON body for one row's request; RequestError if the request is unusable."""
        if request is None:
            raise RequestError(NULL_REQUEST)
        if file is not None and file.content is not None and self._files is not None:
            try:
                parts = [text_part(self._api, request), content_part(self._api, self._files, file)]
            except FileError as e:
                raise RequestError(str(e)) from None
            return (self._text_prefix + _dumps(parts) + self._text_suffix).encode("utf-8")
        if not self._request_is_json:
            return (self._text_prefix + _dumps(request) + self._text_suffix).encode("utf-8")
        return _dumps(self.build_json(request)).encode("utf-8")

    def build_json(self, request: str) -> dict[str, Any]:
        try:
            base = json.loads(request)
        except ValueError as e:
            raise RequestError(f"request is not valid JSON: {e}") from None
        if not isinstance(base, dict):
            raise RequestError(f"request must be a JSON object, not {type(base).__name__}")
        if "null" in request:
            base = _without_nulls(base)
        body: dict[str, Any] = {}
        if self._model is not None:
            body["model"] = self._model
        body.update(self._model_parameters)
        if self._format_param is not None and not _has_format(base):
            body[self._format_param[0]] = self._format_param[1]
        body.update(base)
        for name, job_value in (
            ("custom_inputs", self._custom_inputs),
            ("databricks_options", self._databricks_options),
        ):
            row_value = base.get(name)
            if job_value and isinstance(row_value, Mapping):
                body[name] = {**job_value, **row_value}
            elif job_value and row_value is None:
                body[name] = job_value
        if self._model is not None:
            body["model"] = self._model
        # The reply parser follows the job's stream setting, so the body must agree with it.
        if self._stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body


def _without_nulls(value: Any) -> Any:
    """`value` without the object fields that are null, at any depth: a request mapping's NULL
    field is absent from the body, as Databricks' `to_json` leaves it out (DuckDB's writes it
    as null), and a null would override the job's own value (`max_tokens`)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _has_format(base: Mapping[str, Any]) -> bool:
    text = base.get("text")
    return "response_format" in base or (isinstance(text, Mapping) and "format" in text)
