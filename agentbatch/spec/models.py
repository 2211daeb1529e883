"""The job spec: strict, immutable models. Unknown keys and wrong types are errors.

SQL-bearing fields (`request`, `source.where`, `source.query`) are checked by the quoting layer at
load time, so a bad expression is reported against its YAML line, not at run time.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlglot
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from agentbatch.results import reserved_column
from agentbatch.spec.evaluation import Evaluation
from agentbatch.sql import quoting

JsonValue = Any

# A file is sent base64 (a third larger) and Model Serving takes 4 MB per request for
# foundation-model, external-model and agent endpoints: the largest file that fits with its prompt.
DEFAULT_MAX_FILE_BYTES = 2_900_000


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# YAML gives lists; the frozen models keep tuples. Strict mode still rejects a bare string.
StrTuple = Annotated[tuple[str, ...], BeforeValidator(_list_to_tuple)]
WriteMode = Literal["overwrite", "append", "merge"]
_JOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")
_APP_ENDPOINT = re.compile(r"^apps/[a-z0-9][a-z0-9\-]{0,62}$")
BUILTIN_AGENTS = ("builtin:instant",)


def agent_url_problem(value: str) -> str | None:
    """Why `value` cannot be an agent's address (an http(s) URL with a host, or a built-in
    agent), or None."""
    if value.startswith("builtin:"):
        if value in BUILTIN_AGENTS:
            return None
        return f"{value!r} is not a built-in agent; there is {', '.join(BUILTIN_AGENTS)}"
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError as err:
        return f"{value!r} is not a valid URL: {err}"
    if parts.scheme not in ("http", "https"):
        return f"{value!r} is not an http(s) URL"
    if not parts.hostname or any(c.isspace() or ord(c) < 32 for c in value):
        return f"{value!r} is not a valid URL (a host, and no spaces)"
    return None


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


# The most rows a limit may name: SQL's LIMIT takes a BIGINT.
MOST_ROWS = 2**63 - 1


class StrictModel(BaseModel):
    # The protected namespaces of pydantic 2.10 and later: before it (the floor is 2.6) all of
    # `model_` was, and `agent.model_parameters` printed a UserWarning on every import.
    # No infinite float (`.inf` in YAML): a timeout of `.inf` passed validation and crashed
    # the run in aiohttp's timer.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        protected_namespaces=("model_validate", "model_dump"),
    )


def _sql_error(err: quoting.SqlValueError) -> ValueError:
    return ValueError(str(err))


# Characters a Delta table without column mapping refuses in a column name, nested ones included
# (error class DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES; delta-io/delta SchemaUtils.checkFieldNames).
# `source.key` and `source.columns` become the output table's columns, so they are refused on
# every target: a job that runs on a laptop runs on Databricks. Of these, the name pattern of
# agentbatch.sql.quoting lets only the space through; the rest are listed for the message.
_DELTA_REFUSED = {
    " ": "a space",
    ",": "a comma",
    ";": "a semicolon",
    "{": "a brace",
    "}": "a brace",
    "(": "a parenthesis",
    ")": "a parenthesis",
    "\n": "a line break",
    "\t": "a tab",
    "=": "an equals sign",
}


def delta_refused(name: str) -> str | None:
    """The characters of `name` a Delta table refuses in a column or field name, in words."""
    refused = sorted({_DELTA_REFUSED[c] for c in name if c in _DELTA_REFUSED})
    return " and ".join(refused) or None


def output_column_problem(name: str, table: str | None = None) -> str | None:
    """Why `name` cannot be a column of the output table (a Delta table), or None.

    `table` is the job's source table, when it has one, for the example of the fix."""
    refused = delta_refused(name)
    if refused is None:
        return None
    renamed = re.sub(r"_+", "_", "".join("_" if c in _DELTA_REFUSED else c for c in name))
    renamed = renamed.strip("_") or "col"
    quoted = "`" + name.replace("`", "``") + "`"
    return (
        f"{name!r} has {refused}, which Delta output tables refuse in column names "
        f"(DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES); select it under another name with "
        f"source.query, e.g. SELECT ..., {quoted} AS {renamed} "
        f"FROM {table or '...'}, and name {renamed} here"
    )


def _unnamed_column_problem(name: str, table: str | None) -> str | None:
    """Why a source column's name (a dot, a backtick, ... in it) cannot be named here, with the
    way round it, or None when it is no column name at all (blank)."""
    renamed = re.sub(r"_+", "_", re.sub(r"\W", "_", name)).strip("_")
    if not renamed or name != name.strip():
        return None
    quoted = "`" + name.replace("`", "``") + "`"
    return (
        f"{name!r} cannot be named here: a key or passthrough column is named with letters, "
        "digits, _ and - after a first letter, digit or _ (a dot would be read as a path, a "
        "backtick as a quote); select it under another name with source.query, e.g. "
        f"SELECT ..., {quoted} AS {renamed} FROM {table or '...'}, and name {renamed} here"
    )


def _output_column(value: str, info: ValidationInfo) -> str:
    """A name that becomes a column of the output table: `source.key`, each of `source.columns`."""
    table = info.data.get("table")
    try:
        quoting.identifier(value)
    except quoting.SqlValueError as err:
        problem = _unnamed_column_problem(value, table if isinstance(table, str) else None)
        raise (ValueError(problem) if problem else _sql_error(err)) from None
    problem = output_column_problem(value, table if isinstance(table, str) else None)
    if problem:
        raise ValueError(problem)
    return value


# Checked one by one, so an error names the item (`source.columns[1]`) and its line.
OutputColumns = Annotated[
    tuple[Annotated[str, AfterValidator(_output_column)], ...], BeforeValidator(_list_to_tuple)
]


def _unread_type(ddl: str) -> str | None:
    """A field sqlglot's type reader skips, with every field after it (`STRUCT<a: INT, n: INTEGR,
    b: INT>` reads as `STRUCT<a: INT>`: a misspelt type would silently drop answer fields).
    Read as the type of a CAST, the rest of the text is not skipped but refused."""
    if ddl.count("<") != ddl.count(">") or re.search(r"<\s*>", ddl):
        return None  # unbalanced, or an empty STRUCT<>, ARRAY<>: `_type_problem` names them
    try:
        sqlglot.parse_one(f"CAST(NULL AS {ddl})", read=quoting.DIALECT)
    except (ParseError, TokenError) as err:
        first = (getattr(err, "errors", None) or [{}])[0]
        rest = f"{first.get('highlight', '')}{first.get('end_context', '')}".removesuffix(")")
        if not rest.strip():
            return None
        return (
            f"{ddl!r} is not a Databricks SQL type from `{rest.strip()}` on (a misspelt type name?)"
        )
    return None


def _type_problem(ddl: str) -> str | None:
    """What sqlglot reads past in a response_format type but Databricks refuses: text after the
    closing `>`, an ARRAY or MAP without its types, an empty STRUCT, a DECIMAL out of range, two
    fields whose names differ only in case (Databricks' names are case-insensitive)."""
    depth, closed_at = 0, None
    for at, char in enumerate(re.sub(r"`[^`]*`", lambda m: "x" * len(m.group(0)), ddl)):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if depth == 0 and char == ">" and closed_at is None:
            closed_at = at
    if closed_at is None:
        return f"{ddl!r} is not closed: a `>` is missing"
    if ddl[closed_at + 1 :].strip():
        return f"{ddl!r} has text after its STRUCT<...>"
    t = exp.DataType.Type
    for node in exp.DataType.build(ddl, dialect="databricks").find_all(exp.DataType):
        wanted = {t.ARRAY: 1, t.MAP: 2}.get(node.this)
        if wanted is not None and len(node.expressions) != wanted:
            return f"{node.this.name} takes {wanted} type(s): {node.sql('databricks')}"
        if node.this == t.STRUCT:
            names = [column.name.lower() for column in node.expressions]
            if not names:
                return "a STRUCT needs at least one field"
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                return f"field {twice[0]!r} is given twice (names are case-insensitive)"
        if node.this == t.DECIMAL and node.expressions:
            precision, scale = ([int(p.name) for p in node.expressions] + [0])[:2]
            if not (1 <= precision <= 38 and 0 <= scale <= precision):
                return f"{node.sql('databricks')}: precision is 1 to 38, scale 0 to the precision"
    return None


def _schema_problem(schema: dict[str, Any]) -> str | None:
    """A JSON schema's `required` that checks nothing: not a list of names, or naming a field
    the object does not have (a typo would let every answer without the field pass)."""
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        properties = node.get("properties")
        names = properties if isinstance(properties, dict) else {}
        required = node.get("required")
        if required is not None:
            if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
                return f"`required` must be a list of field names, not {required!r}"
            unknown = [r for r in required if r not in names]
            if unknown:
                return f"`required` names {unknown[0]!r}, which is not in `properties`"
        pending += names.values()
        pending.append(node.get("items"))
    return None


def _answer_field_names(fmt: str | dict[str, Any] | None) -> list[str]:
    """Every field name of a response format, nested ones included."""
    if isinstance(fmt, str):
        node = exp.DataType.build(fmt, dialect="databricks")
        return [column.name for column in node.find_all(exp.ColumnDef)]
    names: list[str] = []
    pending: list[Any] = [fmt]
    while pending:
        schema = pending.pop()
        if not isinstance(schema, dict):
            continue
        properties = schema.get("properties")
        if isinstance(properties, dict):
            names += [str(name) for name in properties]
            pending += properties.values()
        pending.append(schema.get("items"))
    return names


class Source(StrictModel):
    """Where the rows come from: a table (or a query), the unique key, the columns kept."""

    table: str | None = Field(
        default=None, description="Unity Catalog table name: catalog.schema.table"
    )
    query: str | None = Field(
        default=None, description="A SELECT statement (Jinja allowed) instead of `table`"
    )
    key: Annotated[str, AfterValidator(_output_column)] = Field(
        description="Unique row key: the merge key and the resume key"
    )
    columns: OutputColumns = Field(default=(), description="Passthrough columns kept in the output")
    where: str | None = Field(default=None, description="Optional SQL filter on the source rows")
    limit: Annotated[int, Field(gt=0, le=MOST_ROWS)] | None = Field(
        default=None, description="Optional row limit"
    )

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                quoting.table_parts(value)
            except quoting.SqlValueError as err:
                raise _sql_error(err) from None
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        reserved = reserved_column(value)
        if reserved:
            raise ValueError(f"{reserved}; give the key another name in a `query`")
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        key = info.data.get("key")
        if isinstance(key, str) and key.lower() in {c.lower() for c in value}:
            # Here rather than on `source`: the error names the line of `columns`.
            raise ValueError(f"the key is always kept; do not list {key!r} in `columns`")
        for column in value:
            reserved = reserved_column(column)
            if reserved:
                raise ValueError(f"{reserved}; rename it in a `query`")
        if len({c.lower() for c in value}) != len(value):
            raise ValueError("columns are listed twice")
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                quoting.expression(value, what="where clause")
            except quoting.SqlValueError as err:
                raise _sql_error(err) from None
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                quoting.query(value)
            except quoting.SqlValueError as err:
                raise _sql_error(err) from None
        return value

    @model_validator(mode="after")
    def _one_of_table_or_query(self) -> Source:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        return self


class ModelParameters(StrictModel):
    """Passed as `modelParameters` to ai_query and as body fields over REST."""

    max_tokens: Annotated[int, Field(gt=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(gt=0)] | None = None
    stop: StrTuple | None = None

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _int_is_a_float(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in self.model_dump().items()
            if v is not None
        }


def _number_is_a_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Price(StrictModel):
    """What the endpoint charges, per million tokens (for estimates and `max_cost`)."""

    input_per_million: Annotated[float, Field(ge=0)] = Field(
        description="Price of one million input tokens"
    )
    output_per_million: Annotated[float, Field(ge=0)] = Field(
        description="Price of one million output tokens"
    )

    @field_validator("input_per_million", "output_per_million", mode="before")
    @classmethod
    def _float(cls, value: Any) -> Any:
        return _number_is_a_float(value)


class Budget(StrictModel):
    """What a run may spend. A run whose estimate passes a limit sends nothing; a run that
    reaches one stops sending, writes what it answered, and the next run continues."""

    max_rows: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Rows sent to the agent per run (reused answers are free)"
    )
    max_tokens: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Input plus output tokens per run"
    )
    max_cost: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Cost per run, in the unit of the declared prices"
    )
    max_error_rate: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None,
        description="Stop sending once this share of answered rows failed for good "
        "(default 0.5; 1 never stops)",
    )
    error_rate_min_rows: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Rows answered before max_error_rate applies (default 20)"
    )

    @field_validator("max_cost", "max_error_rate", mode="before")
    @classmethod
    def _float(cls, value: Any) -> Any:
        return _number_is_a_float(value)


class Agent(StrictModel):
    """The endpoint each row is sent to, and how."""

    endpoint: str = Field(
        description="`apps/<app-name>` for an agent on Databricks Apps; a Model Serving endpoint name; "
        "or an http(s) URL of an agent server"
    )
    api: Literal["responses", "chat"] = Field(default="responses", description="Request shape")
    custom_inputs: dict[str, JsonValue] = Field(default_factory=dict)
    databricks_options: dict[str, JsonValue] = Field(default_factory=dict)
    model_parameters: ModelParameters = Field(default_factory=ModelParameters)
    response_format: str | dict[str, JsonValue] | None = Field(
        default=None, description="A Databricks STRUCT type, or a JSON schema object"
    )
    fail_on_error: bool = Field(default=False, description="Fail the job when any row fails")
    stream: bool = Field(default=False, description="Read the agent's SSE stream (REST fallback)")
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    max_retries: Annotated[int, Field(ge=0, le=100)] = 8
    max_concurrency: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Cap on concurrent requests (default: adaptive)"
    )
    requests_per_second: Annotated[float, Field(gt=0)] | None = None
    price: Price | None = Field(
        default=None, description="Price per million tokens (else agentbatch.yml `prices:`)"
    )

    @field_validator("timeout_seconds", "requests_per_second", mode="before")
    @classmethod
    def _int_is_a_float(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if value.startswith("apps/") and not _APP_ENDPOINT.match(value):
            raise ValueError("an app endpoint is `apps/<name>` with a lowercase app name")
        if value.startswith(("http://", "https://", "builtin:")):
            problem = agent_url_problem(value)
            if problem:
                raise ValueError(problem)
        if not value.startswith(("apps/", "http://", "https://", "builtin:")) and not re.match(
            r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$", value
        ):
            raise ValueError("not a valid Model Serving endpoint name")
        return value

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str):
            try:
                ddl = quoting.data_type(value)
            except quoting.SqlValueError as err:
                raise _sql_error(err) from None
            unread = _unread_type(value)
            if unread:
                raise ValueError(unread)
            if not ddl.upper().startswith("STRUCT<"):
                raise ValueError("a response_format type must be a STRUCT<...>")
            problem = _type_problem(value)
            if problem:
                raise ValueError(problem)
        elif isinstance(value, dict) and value.get("type") != "object":
            raise ValueError('a JSON schema response_format must have "type": "object"')
        elif isinstance(value, dict):
            problem = _schema_problem(value)
            if problem:
                raise ValueError(problem)
        for name in _answer_field_names(value):
            # The answer is stored as a STRUCT column: Delta checks nested field names too.
            refused = delta_refused(name)
            if refused:
                raise ValueError(
                    f"answer field {name!r} has {refused}, which Delta output tables refuse in "
                    "field names (DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES); give it a name "
                    "without"
                )
        return value

    @property
    def is_app(self) -> bool:
        return self.endpoint.startswith("apps/")


_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+\-]*/[a-z0-9][a-z0-9!#$&^_.+\-]*$")


class Files(StrictModel):
    """Per-row binary input (images, documents) sent beside the text request: `files =>` of
    ai_query on push-down, content parts (base64 data URLs) over REST."""

    content: str = Field(
        description="SQL expression giving the row's bytes (BINARY), e.g. the `content` column "
        "of read_files(..., format => 'binaryFile')"
    )
    name: str | None = Field(
        default=None,
        description="SQL expression giving the file name (e.g. `path`); the media type is taken "
        "from its extension unless `media_type` is declared",
    )
    media_type: str | None = Field(
        default=None, description="Media type of every row's file, e.g. image/png"
    )
    max_bytes: Annotated[int, Field(gt=0)] = Field(
        default=DEFAULT_MAX_FILE_BYTES,
        description="A row whose file is larger is an error row, never sent",
    )

    @field_validator("content", "name")
    @classmethod
    def _expression(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                quoting.expression(value, what=f"files.{info.field_name}")
            except quoting.SqlValueError as err:
                raise _sql_error(err) from None
        return value

    @field_validator("media_type")
    @classmethod
    def _media_type(cls, value: str | None) -> str | None:
        if value is not None and not _MEDIA_TYPE.match(value):
            raise ValueError(f"{value!r} is not a media type (type/subtype, e.g. image/png)")
        return value

    @model_validator(mode="after")
    def _named_or_declared(self) -> Files:
        if self.name is None and self.media_type is None:
            raise ValueError(
                "give `name` (a SQL expression for the file name, e.g. path) or `media_type`: "
                "the media type comes from one of them"
            )
        return self


class Output(StrictModel):
    table: str = Field(description="Target table: catalog.schema.table")
    mode: WriteMode = Field(
        default="merge", description="overwrite | append | merge (by source.key)"
    )

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        try:
            quoting.table_parts(value)
        except quoting.SqlValueError as err:
            raise _sql_error(err) from None
        return value


_QUARTZ_FIELDS = (6, 7)  # seconds minutes hours day-of-month month day-of-week [year]


class Schedule(StrictModel):
    """When the Databricks bundle runs this job (`agentbatch bundle`); ignored by `run`."""

    quartz_cron_expression: str = Field(
        description="Quartz cron: seconds minutes hours day-of-month month day-of-week [year]"
    )
    timezone_id: str = Field(default="UTC", description="Java time zone id, e.g. Europe/Berlin")
    pause_status: Literal["PAUSED", "UNPAUSED"] | None = Field(
        default=None, description="default: the bundle target's schedule_pause_status"
    )

    @field_validator("quartz_cron_expression")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) not in _QUARTZ_FIELDS:
            raise ValueError(
                "a Quartz cron expression has 6 or 7 fields "
                "(seconds minutes hours day-of-month month day-of-week [year]), e.g. '0 0 6 * * ?'"
            )
        return value

    @field_validator("timezone_id")
    @classmethod
    def _timezone(cls, value: str) -> str:
        import zoneinfo

        known = zoneinfo.available_timezones()
        # Java also takes offsets (`UTC+01:00`, `GMT-5`, `+02:00`); without a time zone
        # database (Windows without tzdata) names are left to the Jobs service.
        if known and value not in known and not _ZONE_OFFSET.match(value):
            raise ValueError(
                f"{value!r} is not a time zone id (an IANA name such as Europe/Berlin, or UTC)"
            )
        return value


_ZONE_OFFSET = re.compile(r"^(?:(?:UTC|GMT|UT)(?:[+-]\d{1,2}(?::?\d{2})?)?|[+-]\d{2}:?\d{2})$")


@dataclass(frozen=True)
class VariableUse:
    """Where a loaded job's variables come from (checked in spec.variables)."""

    declared: frozenset[str]  # in the file's `vars:`
    read: frozenset[str]  # by var() in the file's values, when it was loaded
    given: frozenset[str] = frozenset()  # from outside: --var, vars=


@dataclass(frozen=True)
class EnvironmentRead:
    """A value of a job file that read an environment variable with env() when it was loaded."""

    where: str  # `jobs/x.yml:12: agent.custom_inputs.token`
    name: str  # the environment variable


@dataclass(frozen=True)
class JobOrigin:
    """Where a loaded job came from, so every way in resolves the same project for it."""

    file: str  # as given to the loader
    # The folder holding `jobs/`, agentbatch.yml and sqltemplates/ (None: a job read from text).
    project_dir: Path | None = None
    env_line: str = ""  # `jobs/x.yml:30` of the `env:` key, when the file declares one
    environment: tuple[EnvironmentRead, ...] = ()


class Job(StrictModel):
    """One job: run `agent` over the rows of `source`, writing `output`."""

    name: str = Field(description="Job name: letters, digits, _ and -")
    description: str = ""
    source: Source
    request: str | dict[str, str] = Field(
        description="SQL expression per row (a prompt), or a mapping of request fields to SQL expressions"
    )
    agent: Agent
    files: Files | None = Field(
        default=None, description="Per-row binary input (images, documents) beside `request`"
    )
    output: Output
    # Any float a YAML file holds, `.inf` and `.nan` too (the models refuse them elsewhere).
    vars: dict[str, str | int | Annotated[float, Field(allow_inf_nan=True)] | bool] = Field(
        default_factory=dict
    )
    env: StrTuple = Field(default=(), description="Environment variables templates may read")
    template: str | None = Field(
        default=None, description="A template in sqltemplates/ to use instead of the built-in one"
    )
    evaluation: Evaluation | None = Field(default=None, description="Scorers for evaluation jobs")
    schedule: Schedule | None = Field(
        default=None, description="This job's schedule in the bundle (default: the bundle's)"
    )
    budget: Budget = Field(
        default_factory=Budget, description="Limits per run (flags and target settings win)"
    )
    _variables: VariableUse | None = PrivateAttr(default=None)
    _origin: JobOrigin | None = PrivateAttr(default=None)

    @field_validator("vars", mode="before")
    @classmethod
    def _vars(cls, value: Any) -> Any:
        # Before pydantic's union check, which names each member it tried (`vars.a.str`, ...).
        if isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(item, (str, int, float, bool)):
                    kind = (
                        "a mapping"
                        if isinstance(item, dict)
                        else "a list"
                        if isinstance(item, list)
                        else "empty"
                        if item is None
                        else f"a {type(item).__name__}"
                    )
                    raise ValueError(
                        f"variable {name!r} is {kind}: a variable is a string, number or boolean"
                    )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > 100:
            raise ValueError(f"at most 100 characters, not {len(value)}")
        if not _JOB_NAME.match(value):
            raise ValueError("use letters, digits, _ and - (starting with a letter or _)")
        return value

    @field_validator("request")
    @classmethod
    def _request(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        items = value.items() if isinstance(value, dict) else [("request", value)]
        if isinstance(value, dict) and not value:
            raise ValueError("a request mapping needs at least one field")
        for field_name, expr in items:
            try:
                if isinstance(value, dict):
                    quoting.identifier(field_name)
                quoting.expression(
                    expr, what=f"request {field_name!r}" if isinstance(value, dict) else "request"
                )
            except quoting.SqlValueError as err:
                raise _sql_error(err) from None
        return value

    @field_validator("files")
    @classmethod
    def _files(cls, value: Files | None, info: ValidationInfo) -> Files | None:
        if value is None:
            return value
        request = info.data.get("request")
        agent = info.data.get("agent")
        if isinstance(request, dict):
            raise ValueError(
                "a request mapping (a body for a custom model) cannot carry files: give "
                "`request` as one SQL expression (the prompt) and the bytes in files.content"
            )
        if isinstance(agent, Agent):
            if (
                agent.api == "chat"
                and value.media_type
                and not value.media_type.startswith("image/")
            ):
                raise ValueError(
                    f"agent.api chat carries images only (image_url parts), not "
                    f"{value.media_type}: use agent.api: responses for documents"
                )
            if agent.endpoint.startswith("builtin:"):
                raise ValueError(f"the built-in agent {agent.endpoint!r} reads no files")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9_\-]+(\.sql)?$", value):
            raise ValueError("a template name is a file name in sqltemplates/, e.g. my_merge.sql")
        return value
