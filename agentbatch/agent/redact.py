"""Keep credentials out of error messages and logs.

Server messages are copied into the `error` column and into exceptions; a misbehaving server may
echo the request's Authorization header back, or the query string or password of the URL it was
called at. Every message passes through `redact` first: known secrets (registered when auth headers
are built, and the password and query values of every agent URL a run is given), token-shaped
strings, the credentials a URL (of any scheme: a redirect may point at `ftp://user:pw@...`) may
carry, and query-string values are masked.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentbatch.spec import quoted_forms

_lock = threading.Lock()
# Credentials the run sends (auth headers): masked in messages and in answers.
_known: set[str] = set()
# Values that may be secrets or plain words (a URL's query values, a job's env() values): masked
# in messages only. An answer is the agent's text: masking a word in it would misstate it.
_in_messages: set[str] = set()

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
# A query string's values outside a URL (a server quoting the path it was asked for,
# `/agent/responses?code=...`, or just `code=...&sig=...` after a `?`).
_QUERY = re.compile(r"\?[A-Za-z0-9_.~%+-]+=[^\s#'\"<>()\[\]{},;]*")
_QUERY_VALUE = re.compile(r"([?&][A-Za-z0-9_.~%+-]+=)([^&]*)")


# A URL inside a message, without the quotes and punctuation that usually close a sentence. Any
# scheme: an agent may redirect to `ftp://user:password@host/?sig=...`. Brackets are kept when
# they pair up (a password may hold one); an unpaired closing one ends the URL.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_TAIL = ".,;:!?"
# Query parameters that name an API version, never a credential: kept out of the known secrets,
# where they would only mask dates and version numbers everywhere.
_NOT_SECRET_PARAMETERS = frozenset({"api-version", "api_version"})


def safe_url(url: str) -> str:
    """A URL fit for a message: no user name or password, no query values, no fragment (an
    Azure Functions `?code=` key or a token may ride there). Text that is no URL is kept. Of
    another scheme than http(s), a user name alone is kept (`abfss://container@account...`)."""
    if not _SCHEME.match(url):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{url.partition(':')[0]}://***"
    host = parts.hostname or ""
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and parts.scheme.lower() not in ("http", "https") and ":" not in userinfo:
        netloc = f"{userinfo}@"
    else:
        netloc = "***@" if at else ""
    netloc += f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    names = [name for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(f"{name}=***" for name in names) or ("***" if parts.query else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def register_secret(value: str, *, in_answers: bool = True, min_chars: int = 6) -> None:
    """Remember a credential so any later message (and, `in_answers`, answer) containing it is
    masked. Shorter values than `min_chars` are not: masked everywhere, they would garble
    messages (a query value `1`)."""
    if value and len(value) >= min_chars:
        with _lock:
            (_known if in_answers else _in_messages).add(value)


@dataclass(frozen=True)
class Registered:
    """The secrets registered in one process, for another to register (a Spark executor's Python
    worker is a process of its own): picklable, never printed."""

    in_answers: frozenset[str] = frozenset()
    in_messages: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"Registered({len(self.in_answers)} in answers, {len(self.in_messages)} in messages)"


def registered() -> Registered:
    """The secrets this process knows now (auth headers, env() values, URL credentials...)."""
    with _lock:
        return Registered(frozenset(_known), frozenset(_in_messages))


def register_all(secrets: Registered) -> None:
    """Mask what another process registered (`registered()` there) here too, alike."""
    with _lock:
        _known.update(secrets.in_answers)
        _in_messages.update(secrets.in_messages)


def answers_have_secrets() -> bool:
    """Whether any credential a run sends is known, which answers must then be scrubbed of."""
    return bool(_known)


def register_url_credentials(url: str) -> None:
    """Remember the credentials a URL carries (its password, the Basic credential an HTTP client
    makes of it, its query values), so a server echoing them back is masked too."""
    if not _SCHEME.match(url.strip()):
        return
    try:
        parts = urllib.parse.urlsplit(url.strip())
        username, password = parts.username, parts.password
    except ValueError:
        return
    for user, secret in (
        (username or "", password or ""),
        (urllib.parse.unquote(username or ""), urllib.parse.unquote(password or "")),
    ):
        # The user name and password may be plain words (messages only), down to three
        # characters; the Basic credential the HTTP client sends of them is an auth header.
        register_secret(user, in_answers=False, min_chars=3)
        register_secret(secret, in_answers=False, min_chars=3)
        if password is not None:
            for pair in _basic_pairs(f"{user}:{secret}"):
                register_secret(base64.b64encode(pair).decode())
                register_secret(base64.urlsafe_b64encode(pair).decode())
    for query in (parts.query, parts.fragment, _sent_query(url.strip())):
        for item in query.split("&"):
            name, sep, value = item.partition("=")
            if sep and urllib.parse.unquote_plus(name).lower() not in _NOT_SECRET_PARAMETERS:
                register_secret(value, in_answers=False)
                register_secret(urllib.parse.unquote_plus(value), in_answers=False)


def _sent_query(url: str) -> str:
    """The query string as the HTTP client (aiohttp, through yarl) sends it: yarl re-encodes a
    given one (`%2F` is sent as `/`, `%3d` as `%3D`, `é` as `%C3%A9`), so a server quoting the
    query it got quotes neither the form given nor the decoded one."""
    from yarl import URL

    try:
        return URL(url).raw_query_string
    except (ValueError, TypeError):
        return ""


def _basic_pairs(pair: str) -> list[bytes]:
    """`user:password` as the bytes a Basic credential encodes: UTF-8, and Latin-1, which aiohttp
    encodes it in (`BasicAuth`'s default) when every letter is one of Latin-1's."""
    forms = [pair.encode()]
    try:
        latin = pair.encode("latin-1")
    except UnicodeEncodeError:
        return forms
    return forms if latin == forms[0] else [*forms, latin]


def register_environment_value(value: str) -> None:
    """A value a job reads with env(), in each form text may quote it (`quoted_forms`: raw, in a
    SQL string literal, in JSON, in a repr), masked in messages only, as a URL's query values."""
    for form in quoted_forms(value):
        register_secret(form, in_answers=False)


def register_auth_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if name.lower() in ("authorization", "x-databricks-azure-sp-management-token"):
            _, _, credential = value.partition(" ")
            for secret in (value, credential):
                register_secret(secret)
                for encoded in _base64_forms(secret):
                    register_secret(encoded)


def _base64_forms(value: str) -> tuple[str, ...]:
    """`value` base64-encoded, standard and URL-safe, without padding: a server's debug output
    may quote a header encoded (padding left out, so a form quoted without it is masked too)."""
    raw = value.encode()
    return tuple(
        encoded.decode().rstrip("=")
        for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw))
    )


def redact_known(text: str) -> str:
    """Mask only registered secrets (for answers, where token-shaped patterns may be content)."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    return _masked(text, known)


def redact(text: str) -> str:
    with _lock:
        known = sorted(_known | _in_messages, key=len, reverse=True)
    text = _masked(text, known)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    if "://" in text:
        text = _URL.sub(_safe_match, text)
    if "?" in text:
        text = _QUERY.sub(_safe_query, text)
    return text


def _masked(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` (longest first) as ***."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _safe_query(match: re.Match[str]) -> str:
    return _QUERY_VALUE.sub(_masked_value, match.group(0))


def _masked_value(match: re.Match[str]) -> str:
    value = match.group(2)
    tail = value[len(value.rstrip(_URL_TAIL)) :]
    return f"{match.group(1)}***{tail}" if len(tail) < len(value) else match.group(0)


def _safe_match(match: re.Match[str]) -> str:
    url = _paired(match.group(0))
    end = len(url.rstrip(_URL_TAIL))
    return safe_url(url[:end]) + url[end:] + match.group(0)[len(url) :]


def _paired(url: str) -> str:
    """`url` up to its first closing bracket that no opening one pairs (the message's own)."""
    for opening, closing in ("()", "[]"):
        depth = 0
        for index, char in enumerate(url):
            if char == opening:
                depth += 1
            elif char == closing:
                depth -= 1
                if depth < 0:
                    url = url[:index]
                    break
    return url


# -- log records -------------------------------------------------------------------------------------
# agentbatch's loggers are `agentbatch` and its children (`logging.getLogger(__name__)`).
_LOGGERS = "agentbatch"
_CHILDREN = _LOGGERS + "."


def install_log_masking() -> None:
    """Mask every log record of agentbatch's loggers as `redact` masks messages, wherever the
    record goes (the application's handlers, pytest's caplog, `logging.lastResort`).

    A record factory, not a filter: a filter on the `agentbatch` logger is not consulted for
    records its children (`agentbatch.agent.bulk`, ...) log, a handler's filter only for its own
    handler, and a handler added to `agentbatch` to mask would silence `logging.lastResort` (the
    warnings a script without logging set-up sees). The factory wraps the one in place (chained,
    as the logging cookbook says factories should be), runs only for records a logger's level let
    through, and leaves other loggers' records as they are. Installed once, on `import
    agentbatch`."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_agentbatch_masking", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        name = record.name
        if isinstance(name, str) and (name == _LOGGERS or name.startswith(_CHILDREN)):
            _mask_record(record)
        return record

    make._agentbatch_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


def _mask_record(record: logging.LogRecord) -> None:
    """`record`'s message, traceback and stack, masked: the message is formatted here (its
    arguments may quote a secret: an exception, a URL), the traceback formatted as a Formatter
    would, into `exc_text`, which Formatters print in its place."""
    try:
        message = record.getMessage()
    except Exception:  # bad arguments: a handler reports them when it formats the record
        return
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_FORMATTER = logging.Formatter()
