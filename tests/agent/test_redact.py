"""Credentials are masked in every message."""

from __future__ import annotations

import pytest

from agentbatch.agent.redact import redact, redact_known, register_auth_headers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdefgh12345", "Authorization: Bearer ***"),
        ("basic dXNlcjpwYXNzd29yZA==", "basic ***"),
        ("token dapifedcba9876543210fedcba9876543210-2 used", "token *** used"),
        ("jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig_abc end", "jwt *** end"),
        ('{"client_secret": "xyz123", "a": 1}', '{"client_secret": "***", "a": 1}'),
        ("access_token=abc&x=1", "access_token=***&x=1"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_token_shapes_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_registered_credentials_are_masked_anywhere() -> None:
    register_auth_headers({"Authorization": "Bearer opaque-token-value-42"})
    assert redact("the agent echoed opaque-token-value-42!") == "the agent echoed ***!"
    assert redact_known("x opaque-token-value-42 y") == "x *** y"
    # Answers are only scrubbed of registered secrets, not of token-like words.
    assert redact_known("Bearer authentication is standard") == "Bearer authentication is standard"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "HTTP 403 (http://alice:pw-x@127.0.0.1:8080/agent/responses?code=K1 refused it).",
            "HTTP 403 (http://***@127.0.0.1:8080/agent/responses?code=*** refused it).",
        ),
        ("see https://h/a/b#access_token=t, then", "see https://h/a/b, then"),
        ("https://h/openai/responses?api-version=v1", "https://h/openai/responses?api-version=***"),
        ("http://127.0.0.1:8000/responses has no such route", "unchanged"),
    ],
)
def test_urls_in_messages_keep_no_credentials(text: str, expected: str) -> None:
    assert redact(text) == (text if expected == "unchanged" else expected)


def test_an_environment_value_is_masked_in_every_form_the_loader_masks_too() -> None:
    """One list of forms for the run's messages and the loader's: a repr (a KeyError's message,
    a dict in a traceback) quotes a value holding both quotes as neither SQL nor JSON does."""
    from agentbatch.agent.redact import register_environment_value
    from agentbatch.spec import quoted_forms

    value = "env-k3y'with\"both"
    register_environment_value(value)
    assert str(KeyError(value)) == "'env-k3y\\'with\"both'"
    assert redact(f"lookup failed: {KeyError(value)}") == "lookup failed: '***'"
    assert redact(f"sql '{value.replace(chr(39), chr(39) * 2)}'") == "sql '***'"
    assert all(redact(form) == "***" for form in quoted_forms(value))


def test_what_a_process_registered_travels_pickled_and_is_never_printed() -> None:
    import pickle

    from agentbatch.agent.redact import register_all, register_environment_value, registered

    register_environment_value("shipped-env-value-77")
    snapshot = pickle.loads(pickle.dumps(registered()))
    assert "shipped-env-value-77" in snapshot.in_messages
    assert "shipped-env-value-77" not in repr(snapshot)
    register_all(snapshot)  # as an executor does: idempotent
    assert redact("x shipped-env-value-77 y") == "x *** y"


def test_an_auth_header_quoted_base64_encoded_is_masked() -> None:
    """A server's debug output quoted the Authorization header base64-encoded: it reached the
    `error` column unmasked, and decoded to the token."""
    import base64

    header = "Bearer b64-echoed-t0ken?value>>"
    register_auth_headers({"Authorization": header})
    for quoted in (header, header.partition(" ")[2]):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(quoted.encode()).decode()
            for text in (encoded, encoded.rstrip("=")):
                masked = redact(f"debug auth={text} end")
                assert masked.startswith("debug auth=***") and masked.endswith(" end"), masked
                assert redact_known(f"answer {text}").startswith("answer ***")
