"""JSON text written per row (the ledger's key of a string key, a reply's custom outputs, a
typed answer's text fields) is what `json.dumps` with the same options writes, from an encoder
made once: `json.dumps` with any option builds a new JSONEncoder on every call, several
microseconds a row."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from agentbatch.agent.ledger import canonical_keys
from agentbatch.agent.replies import AgentReply
from agentbatch.agent.response_format import parse_response_format
from agentbatch.agent.worker import Outcome
from tests.support.profiled import functions_called

KEYS = ["plain", "é ü 漢字 😀", 'quote " and \\ backslash', "tab\tnew\nline\x00", "", None]
CUSTOM: list[Any] = [
    {"id": 123456789012345678901234567890, "score": float("nan"), "tags": ["é", "😀"]},
    {"when": object(), "nested": {"inf": float("inf")}},  # default=str for what is not JSON
    ["a", 1, 2.5, True, None],
    "just text",
]


def encoders_built() -> functions_called:
    """The JSONEncoders made meanwhile."""
    return functions_called(
        lambda code: code.co_name == "__init__" and code.co_filename.endswith("json/encoder.py")
    )


def test_string_keys_are_json_dumps_text_without_an_encoder_a_row() -> None:
    column = pa.array(KEYS * 50, type=pa.string())
    with encoders_built() as made:
        keys = canonical_keys(column)
    assert keys == [json.dumps(k, ensure_ascii=False) for k in KEYS * 50]
    assert canonical_keys(pa.array(KEYS, type=pa.large_string())) == keys[: len(KEYS)]
    assert made == []


def test_custom_outputs_are_json_dumps_text_without_an_encoder_a_row() -> None:
    outcomes = [Outcome(AgentReply("answer", custom)) for custom in CUSTOM * 25]
    with encoders_built() as made:
        texts = [o.custom_outputs_json for o in outcomes]
    assert texts == [json.dumps(c, ensure_ascii=False, default=str) for c in CUSTOM * 25]
    assert made == []


def test_typed_answers_text_fields_are_json_dumps_text_without_an_encoder_a_row() -> None:
    fmt = parse_response_format(
        {
            "type": "json_schema",
            "json_schema": {
                "name": "t",
                "schema": {
                    "type": "object",
                    "properties": {"label": {"type": "string"}, "extra": {"type": "object"}},
                },
            },
        }
    )
    values = [{"a": ["é", 1]}, [1, "😀"], 3.5, True]
    texts = [json.dumps({"label": v, "extra": v}) for v in values * 25]
    with encoders_built() as made:
        coerced = [fmt.parse(text) for text in texts]
    assert [c["label"] for c in coerced] == [
        json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values * 25
    ]
    assert [c["extra"] for c in coerced] == [json.dumps(v, ensure_ascii=False) for v in values * 25]
    assert made == []
