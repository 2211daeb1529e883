# mypy: disable-error-code="no-untyped-call"
# (the Thrift classes generated into the connector carry no type hints)
"""Native statement parameters (`TSparkParameter`) decoded into Python values.

The connector sends every value as a string plus a SQL type name (`INT`, `DECIMAL(8,4)`,
`TIMESTAMP`, `ARRAY`, ...); arrays and maps arrive as nested argument lists.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Sequence
from typing import Any

from databricks.sql.thrift_api.TCLIService import ttypes

_INTEGER = {"TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT"}
_FLOAT = {"FLOAT", "DOUBLE"}


class ParameterError(ValueError):
    pass


def _scalar(sql_type: str, text: str | None) -> Any:
    kind = re.sub(r"\(.*\)$", "", sql_type.strip().upper())
    if text is None or kind == "VOID":
        return None
    if kind in _INTEGER:
        return int(text)
    if kind in _FLOAT:
        return float(text)
    if kind == "DECIMAL":
        return decimal.Decimal(text)
    if kind == "BOOLEAN":
        return text.strip().lower() == "true"
    if kind == "DATE":
        return dt.date.fromisoformat(text)
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ"):
        return dt.datetime.fromisoformat(text)
    if kind == "STRING":
        return text
    raise ParameterError(f"unsupported parameter type {sql_type!r}")


def _value_arg(arg: ttypes.TSparkParameterValueArg) -> Any:
    if arg.arguments is not None:
        return _nested(arg.type or "", arg.arguments)
    return _scalar(arg.type or "STRING", arg.value)


def _nested(sql_type: str, args: Sequence[ttypes.TSparkParameterValueArg]) -> Any:
    values = [_value_arg(a) for a in args]
    if sql_type.upper() == "MAP":
        return dict(zip(values[0::2], values[1::2], strict=True))
    return values


def decode_parameter(p: ttypes.TSparkParameter) -> Any:
    if p.arguments is not None:
        return _nested(p.type or "", p.arguments)
    text = p.value.stringValue if p.value is not None else None
    return _scalar(p.type or "STRING", text)


# Native parameters: "at most 255 parameter markers"; "the maximum size of all parameterized
# values cannot exceed 1MB" (databricks-sql-python docs/parameters.md, Limitations). 1MB read as
# 1,000,000 bytes of values, the stricter reading.
MAX_PARAMETERS = 255
MAX_PARAMETER_BYTES = 1_000_000


def decode_parameters(params: Sequence[ttypes.TSparkParameter] | None) -> dict[str, Any]:
    """Named parameters by name; positional (`?`) ones by their 1-based position as a string.
    Refuses more than MAX_PARAMETERS of them or MAX_PARAMETER_BYTES of values together."""
    if len(params or ()) > MAX_PARAMETERS:
        raise ParameterError(f"{len(params or ())} parameters; at most {MAX_PARAMETERS}")
    size = sum(
        len(p.value.stringValue.encode("utf-8"))
        for p in params or ()
        if p.value is not None and p.value.stringValue is not None
    )
    if size > MAX_PARAMETER_BYTES:
        raise ParameterError(f"parameter values of {size} bytes; at most {MAX_PARAMETER_BYTES}")
    out: dict[str, Any] = {}
    for position, p in enumerate(params or (), start=1):
        key = p.name if p.name is not None else str(position)
        if key in out:
            raise ParameterError(f"parameter {key!r} given twice")
        out[key] = decode_parameter(p)
    return out
