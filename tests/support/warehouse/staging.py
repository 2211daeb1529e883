"""Unity Catalog volume staging commands (`PUT`, `GET`, `REMOVE`) on a local directory.

The warehouse answers a staging command with a one-row result (`operation`, `presignedUrl`,
`localFile`, `headers`) flagged `isStagingOperation`; the connector then moves the bytes itself
with an HTTP request to the presigned URL, which this server also serves.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa

_QUOTED = r"'((?:[^'\\]|\\.|'')*)'"
_PUT = re.compile(rf"^\s*PUT\s+{_QUOTED}\s+INTO\s+{_QUOTED}(\s+OVERWRITE)?\s*;?\s*$", re.I | re.S)
_GET = re.compile(rf"^\s*GET\s+{_QUOTED}\s+TO\s+{_QUOTED}\s*;?\s*$", re.I | re.S)
_REMOVE = re.compile(rf"^\s*REMOVE\s+{_QUOTED}\s*;?\s*$", re.I | re.S)
_NAME = r"`?([\w-]+)`?"
_CREATE_VOLUME = re.compile(
    rf"^\s*CREATE\s+VOLUME\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\.{_NAME}\.{_NAME}\s*;?\s*$", re.I
)


class StagingError(ValueError):
    pass


@dataclass(frozen=True)
class StagingCommand:
    operation: str  # PUT | GET | REMOVE
    volume_path: str
    local_file: str | None
    overwrite: bool = False


def _unquote(text: str) -> str:
    return text.replace("''", "'").replace("\\'", "'")


def parse_staging_command(sql: str) -> StagingCommand | None:
    """The staging command in `sql`, or None when `sql` is not one."""
    if m := _PUT.match(sql):
        return StagingCommand("PUT", _unquote(m[2]), _unquote(m[1]), overwrite=bool(m[3]))
    if m := _GET.match(sql):
        return StagingCommand("GET", _unquote(m[1]), _unquote(m[2]))
    if m := _REMOVE.match(sql):
        return StagingCommand("REMOVE", _unquote(m[1]), None)
    return None


def create_volume_command(sql: str) -> tuple[str, str, str, bool] | None:
    """(catalog, schema, volume, if_not_exists) of `CREATE VOLUME [IF NOT EXISTS] c.s.v`."""
    if m := _CREATE_VOLUME.match(sql):
        return m[2], m[3], m[4], bool(m[1])
    return None


def create_volume(
    volumes_dir: Path, catalog: str, schema: str, volume: str, if_not_exists: bool
) -> pa.Table:
    """A managed volume is a folder here. Databricks: an existing name raises
    VOLUME_ALREADY_EXISTS unless IF NOT EXISTS (CREATE VOLUME reference)."""
    folder = volumes_dir / catalog / schema / volume
    if folder.is_dir() and not if_not_exists:
        raise StagingError(
            f"[VOLUME_ALREADY_EXISTS] Cannot create volume `{catalog}`.`{schema}`.`{volume}` "
            "because it already exists."
        )
    folder.mkdir(parents=True, exist_ok=True)
    return pa.table({"status": pa.array([], pa.string())})


def volume_file(volumes_dir: Path, volume_path: str) -> Path:
    """`/Volumes/<catalog>/<schema>/<volume>/<path>` -> the file under `volumes_dir`."""
    parts = PurePosixPath(volume_path).parts
    if len(parts) < 6 or parts[0] != "/" or parts[1] != "Volumes" or ".." in parts:
        raise StagingError(
            f"not a volume file path: {volume_path!r} (expected /Volumes/<catalog>/<schema>/<volume>/<file>)"
        )
    return volumes_dir.joinpath(*parts[2:])


class PresignedUrls:
    """One-shot style URLs handed to the connector, mapped to (method, local file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._urls: dict[str, tuple[str, Path, bool]] = {}

    def issue(self, method: str, target: Path, overwrite: bool) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._urls[token] = (method, target, overwrite)
        return token

    def resolve(self, token: str, method: str) -> tuple[Path, bool] | None:
        with self._lock:
            entry = self._urls.get(token)
        if entry is None or entry[0] != method:
            return None
        return entry[1], entry[2]


def staging_result(command: StagingCommand, url: str) -> pa.Table:
    return pa.table(
        {
            "operation": [command.operation],
            "presignedUrl": [url],
            "localFile": [command.local_file],
            "headers": ["{}"],
        },
        schema=pa.schema(
            [
                ("operation", pa.string()),
                ("presignedUrl", pa.string()),
                ("localFile", pa.string()),
                ("headers", pa.string()),
            ]
        ),
    )


_HTTP_METHOD = {"PUT": "PUT", "GET": "GET", "REMOVE": "DELETE"}


class StagingArea:
    """Volumes under a local directory, reached through presigned URLs on this server."""

    def __init__(self, volumes_dir: Path, base_url: str) -> None:
        self.volumes_dir = volumes_dir
        self.base_url = base_url.rstrip("/")
        self._urls = PresignedUrls()

    def prepare(self, command: StagingCommand) -> pa.Table:
        """Check the command and answer with the presigned URL the connector will call."""
        target = volume_file(self.volumes_dir, command.volume_path)
        catalog, schema, volume = PurePosixPath(command.volume_path).parts[2:5]
        if not (self.volumes_dir / catalog / schema / volume).is_dir():
            # A volume must be created (CREATE VOLUME) before files go into it; folders inside
            # one are made as files arrive.
            raise StagingError(
                f"[UC_VOLUME_NOT_FOUND] Volume `{catalog}`.`{schema}`.`{volume}` does not exist"
            )
        if command.operation == "PUT" and target.exists() and not command.overwrite:
            raise StagingError(f"{command.volume_path} already exists; add OVERWRITE to replace it")
        if command.operation != "PUT" and not target.is_file():
            raise StagingError(f"{command.volume_path} does not exist")
        token = self._urls.issue(_HTTP_METHOD[command.operation], target, command.overwrite)
        return staging_result(command, f"{self.base_url}/staging/{token}")

    def serve(self, method: str, token: str, body: bytes) -> tuple[int, bytes]:
        """Answer the connector's HTTP request to a presigned URL: (status, body)."""
        resolved = self._urls.resolve(token, method)
        if resolved is None:
            return 404, b"unknown or expired presigned URL"
        target, overwrite = resolved
        if method == "PUT":
            if target.exists() and not overwrite:
                return 409, b"file exists"
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(body)
            partial.replace(target)
            return 201, b""
        if not target.is_file():
            return 404, b"no such file"
        if method == "GET":
            return 200, target.read_bytes()
        target.unlink()
        return 204, b""
