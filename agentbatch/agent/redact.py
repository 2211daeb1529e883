"""Keep credentials out of error messages and logs.

Server messages are copied into the `error` column and into exceptions; a misbehaving server may
echo the request's Authorization header back. Every message passes through `redact` first: known
secrets (registered when auth headers are built), token-shaped strings and the credentials a URL
may carry are masked.
"""

from __future__ import annotations

import re
import threading
import urllib.parse

_lock = threading.Lock()
_known: set[str] = set()

# (pattern, replacement): token-shaped strings masked wherever they appear in a message.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"\bdapi[0-9a-f]{16,}(?:-\d+)?\b"), "***"),
    (re.compile(r"\bdose[0-9a-f]{16,}\b"), "***"),
    # JWTs (OAuth access tokens).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "***"),
    (
        re.compile(
            r"(?i)(client_secret|access_token|refresh_token|password)(\"?\s*[:=]\s*\"?)[^\"&\s,}]+"
        ),
        r"\1\2***",
    ),
)


# A URL inside a message, without the brackets and punctuation that usually close a sentence.
_URL = re.compile(r"\bhttps?://[^\s'\"<>()]+")
_URL_TAIL = ".,;:!?"


def safe_url(url: str) -> str:
    """A URL fit for a message: no user name or password, no query values, no fragment (an
    Azure Functions `?code=` key or a token may ride there). Text that is no URL is kept."""
    if not url.startswith(("http://", "https://")):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{url.partition(':')[0]}://***"
    host = parts.hostname or ""
    netloc = ("***@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host)
    if port:
        netloc += f":{port}"
    names = [name for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(f"{name}=***" for name in names) or ("***" if parts.query else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def register_secret(value: str) -> None:
    """Remember a credential so any later message containing it is masked."""
    if value and len(value) >= 6:
        with _lock:
            _known.add(value)


def register_auth_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if name.lower() in ("authorization", "x-databricks-azure-sp-management-token"):
            register_secret(value)
            _, _, credential = value.partition(" ")
            register_secret(credential)


def redact_known(text: str) -> str:
    """Mask only registered secrets (for answers, where token-shaped patterns may be content)."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def redact(text: str) -> str:
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    if "://" in text:
        text = _URL.sub(_safe_match, text)
    return text


def _safe_match(match: re.Match[str]) -> str:
    url = match.group(0)
    tail = len(url) - len(url.rstrip(_URL_TAIL))
    return safe_url(url[: len(url) - tail]) + url[len(url) - tail :]
