"""Where a credential could leak, and a search of all of it.

Files are searched as raw bytes AND decoded: Parquet pages and the ledger's Arrow blobs are
compressed, so a raw byte search alone would miss a secret stored inside them.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def forms(secret: str, client_id: str | None = None) -> list[str]:
    """The secret and the encodings a leak could take (Basic auth, URL-safe base64)."""
    found = [secret]
    if client_id is not None:
        pair = f"{client_id}:{secret}".encode()
        found += [base64.b64encode(pair).decode(), base64.urlsafe_b64encode(pair).decode()]
    return found


def _table_text(table: pa.Table) -> str:
    return "\n".join(repr(row) for row in table.to_pylist())


def _ledger_text(path: Path) -> str:
    """Every row of every table of a ledger, Arrow blobs decoded."""
    parts: list[str] = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        try:
                            parts.append(_table_text(pa.ipc.open_stream(value).read_all()))
                        except pa.ArrowException:
                            parts.append(value.decode("utf-8", "replace"))
                    else:
                        parts.append(repr(value))
    finally:
        conn.close()
    return "\n".join(parts)


def _duckdb_text(path: Path) -> str:
    """Every row of every table of a DuckDB file (the local warehouse compresses its strings)."""
    import duckdb

    parts: list[str] = []
    conn = duckdb.connect(str(path), read_only=True)
    try:
        names = conn.sql("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        for schema, table in names:
            for row in conn.sql(f'SELECT * FROM "{schema}"."{table}"').fetchall():
                parts.append(repr(row))
    finally:
        conn.close()
    return "\n".join(parts)


def file_texts(root: Path) -> dict[str, str]:
    """Every file under `root`: raw bytes as text, plus decoded Parquet, SQLite and DuckDB
    contents."""
    texts: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts[str(path)] = data.decode("utf-8", "replace") + "\n" + data.decode("latin-1")
        if path.suffix == ".parquet":
            texts[f"{path} (decoded)"] = _table_text(pq.read_table(path))
        if data.startswith(b"SQLite format 3"):
            texts[f"{path} (decoded)"] = _ledger_text(path)
        if path.suffix == ".duckdb":
            texts[f"{path} (decoded)"] = _duckdb_text(path)
    return texts


def leaks(secrets: Iterable[str], places: dict[str, Any]) -> list[str]:
    """`place: secret-prefix` for every place any of `secrets` appears in."""
    found = []
    for name, content in places.items():
        text = content if isinstance(content, str) else repr(content)
        for secret in secrets:
            if secret and secret in text:
                found.append(f"{name}: {secret[:6]}…")
    return found
