"""The selection, checked before any call (and by a dry run, which refuses what a run would):
its size, what the target already holds, keys that repeat, keys that are missing."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.agent.response_format import parse_response_format
from agentbatch.errors import AgentbatchError, UsageError
from agentbatch.planning.builder import build_plan
from agentbatch.planning.definition import RestFallback
from agentbatch.results import RESULT_COLUMN_NAMES
from agentbatch.spec.project import template_dirs

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlglot import exp

    from agentbatch.engines.base import Engine
    from agentbatch.planning.definition import Plan

log = logging.getLogger(__name__)


def replacing_if_reshaped(plan: Plan, engine: Engine) -> Plan:
    """Mode overwrite over a target that cannot keep its rows beside the job's (answers of
    another shape: its `response_format` changed; no column for the job's key: `source.key`
    changed): the plan that replaces the target keeping none of its rows. Any other plan as it
    is."""
    output = plan.job.output
    if output.mode != "overwrite" or not engine.table_exists(output.table):
        return plan
    schema = engine.read_table(output.table, limit=0).schema
    reason = _reshaped(plan, schema)
    if reason is None:
        reason = _key_retyped(plan, engine, schema)
    if reason is None:
        return plan
    log.warning("%s %s: mode overwrite replaces it, keeping none of its rows", output.table, reason)
    options = dataclasses.replace(plan.options, replace_target=True)
    root = Path(plan.options.project_dir or ".")
    return build_plan(plan.job, plan.target, options, template_dirs(root))


def _reshaped(plan: Plan, schema: pa.Schema) -> str | None:
    """Why the target's rows cannot stand beside the job's answers, or None."""
    key = plan.job.source.key
    if key.lower() not in {name.lower() for name in schema.names}:
        return f"has no column {key!r}, the job's source.key"
    if "response" in schema.names and response_shape_change(plan, schema) is not None:
        return "holds answers of another shape than the job's response_format"
    return None


def _key_retyped(plan: Plan, engine: Engine, schema: pa.Schema) -> str | None:
    """Why the target's rows cannot be matched with the source's by key (its key is of another
    type: '01' and 1 would be one key), or None."""
    types = engine.fetch_one(plan.preflight.key_types.sql)
    source = types.get("source_key_type")
    target = types.get("target_key_type") or _declared_key_type(plan, schema)
    if not source or not target or _key_kind(str(source)) == _key_kind(str(target)):
        return None
    return f"holds its key {plan.job.source.key!r} as {target}, the source as {source}"


def _check_target_key(plan: Plan, engine: Engine) -> None:
    """Refuse a merge or append into a target that has no column for the job's key (source.key
    changed since it was written): every statement matches rows by it."""
    schema = engine.read_table(plan.job.output.table, limit=0).schema
    key = plan.job.source.key
    if key.lower() in {name.lower() for name in schema.names}:
        return
    raise UsageError(
        f"{plan.job.output.table} has no column {key!r}, the job's source.key (it was written "
        "with another key), so nothing was sent: run once with mode overwrite (it rewrites the "
        "table by the new key), or write to a new output table"
    )


def selection_of(plan: Plan, engine: Engine) -> tuple[Plan, dict[str, int]]:
    """Check and count the selection without creating anything, so that a run refused here or
    by its budget leaves no trace: (the plan whose statements select the rows while the target
    is missing, the counts). Once the target exists, that is `plan` itself."""
    if not engine.table_exists(plan.job.output.table):
        plan = first_run_plan(plan)
    elif plan.job.output.mode != "overwrite":
        _check_target_key(plan, engine)
    return plan, check_selection(plan, engine)


def check_passthrough(selecting: Plan, engine: Engine) -> None:
    """Refuse, before any call, a source column the engine cannot write back as it is (an
    engine that stages answers says so: `check_passthrough`). `selecting`: the plan whose
    inputs read no target that does not exist yet (`selection_of`)."""
    check = getattr(engine, "check_passthrough", None)
    if check is not None and isinstance(selecting.steps, RestFallback):
        source = selecting.job.source
        check(selecting.steps.inputs.sql, [source.key, *source.columns])


def first_run_plan(plan: Plan) -> Plan:
    """The plan as a first run selects, for a target that does not exist yet: every row (a full
    refresh selects alike in every mode), as mode overwrite replacing the target so that no
    statement or check reads the missing target (a merge's check for keys it holds twice would,
    the key types' check of every other mode, and a limited refresh's choice of rows)."""
    options = dataclasses.replace(plan.options, full_refresh=True, replace_target=True)
    output = plan.job.output.model_copy(update={"mode": "overwrite"})
    first_job = plan.job.model_copy(update={"output": output})
    root = Path(plan.options.project_dir or ".")
    return build_plan(first_job, plan.target, options, template_dirs(root))


def check_selection(plan: Plan, engine: Engine) -> dict[str, int]:
    """Count the selection and what the target already holds; refuse a source whose keys repeat
    and a merge over a target holding a key in several rows; warn of rows without a key."""
    try:
        counts = engine.fetch_one(plan.preflight.counts.sql)
    except AgentbatchError:
        # The count compares the source's keys with the target's, which fails on a key no cast
        # converts ('x' against numbers) before the types are read: name them, as when it does.
        _refuse_retyped_key(plan, engine)
        raise
    repeated = int(counts.get("repeated_keys") or 0)
    if repeated:
        raise UsageError(repeated_keys_message(plan, engine, repeated))
    target_key_type = counts.get("target_key_type")
    if "target_key_type" in counts and target_key_type is None:
        # An empty target has no value to name its key's type: its column still has one (a
        # table the user truncated, or one a run created for an empty selection).
        target_key_type = _declared_key_type(
            plan, engine.read_table(plan.job.output.table, limit=0).schema
        )
    _check_key_types(plan, counts.get("source_key_type"), target_key_type)
    source_key_type = counts.get("source_key_type")
    _check_columns(plan, engine, str(source_key_type) if source_key_type else None)
    several = int(counts.get("target_repeated_keys") or 0)
    if several:
        raise UsageError(repeated_target_keys_message(plan, several))
    selection = {
        "selected": int(counts.get("selected") or 0),
        "skipped": int(counts.get("done") or 0),
    }
    # Failures the target holds for the selection are not sent again (until --retry-errors):
    # they are still the selection's failures.
    skipped_errors = int(counts.get("done_errors") or 0)
    if skipped_errors:
        selection["skipped_errors"] = skipped_errors
    null_keys = int(counts.get("null_keys") or 0)
    if null_keys:
        log.warning(
            "%d source row(s)%s have no %r (NULL): a row without a key can be neither written by "
            "key nor resumed, so they are not sent; give them a key or filter them out in "
            "`source.where`",
            null_keys,
            " matching `source.where`" if plan.job.source.where else "",
            plan.job.source.key,
        )
        selection["null_keys"] = null_keys
    return selection


def repeated_target_keys_message(plan: Plan, several: int) -> str:
    """Why a merge (a target holding a key in several rows) or an append (a key in several rows
    for one request) is refused: written by mode append, or by the job under another
    `source.key` (a column the table holds, whose values repeat in it)."""
    table, key = plan.job.output.table, plan.job.source.key
    if plan.job.output.mode == "append":
        return (
            f"{table} holds {several} key(s) in more than one row for the same request (by "
            f"{key!r}, the job's source.key: written with another source.key); mode append "
            "keeps one row per key and request, so nothing was sent: run once with mode "
            "overwrite (it keeps one row per key and reuses every answer the table holds), or "
            "write to a new output table"
        )
    return (
        f"{table} holds {several} key(s) in more than one row (by {key!r}, the job's "
        "source.key: written by mode append, or with another source.key); mode merge keeps one "
        "row per key, so nothing was sent: run once with mode overwrite (it reuses every answer "
        "the table holds) or keep mode append"
    )


# Key types that compare alike: a key read as INT one day and BIGINT the next is the same key.
# Names as DuckDB's and Spark's typeof() give them.
_INTEGER_TYPES = frozenset(
    [
        "tinyint",
        "smallint",
        "int",
        "integer",
        "bigint",
        "hugeint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "uhugeint",
        "byte",
        "short",
        "long",
        "int1",
        "int2",
        "int4",
        "int8",
    ]
)
_STRING_TYPES = frozenset({"string", "varchar", "char", "text"})
# A declared key column's kind, as typeof() names it (read when the table holds no row to ask).
_DECLARED_KEY_TYPES = {"integer": "bigint", "string": "string"}


def _declared_key_type(plan: Plan, schema: pa.Schema) -> str | None:
    """The type of the target's key column as its schema declares it, when it is a number or
    text (other kinds: None, not compared)."""
    key = plan.job.source.key.lower()
    for field in schema:
        if field.name.lower() == key:
            return _DECLARED_KEY_TYPES.get(str(_shape(field.type)))
    return None


def _key_kind(type_name: str) -> str:
    name = type_name.strip().lower()
    head = name.split("(", 1)[0].strip()
    if head in _INTEGER_TYPES:
        return "integer"
    if head in ("decimal", "numeric") and _decimal_scale(name) == 0:
        # A whole-number DECIMAL compares with an integer by value: a CSV key past BIGINT is
        # HUGEINT, stored as DECIMAL(38,0).
        return "integer"
    if head in _STRING_TYPES or head == "enum":  # a pandas Categorical reads as an ENUM
        return "string"
    return name


def _decimal_scale(name: str) -> int | None:
    """The scale of `decimal(p,s)` (0 for `decimal(p)`), None for a bare `decimal`."""
    params = name.partition("(")[2].rstrip(")").split(",")
    try:
        return int(params[1]) if len(params) > 1 else (0 if params[0].strip() else None)
    except ValueError:
        return None


def _refuse_retyped_key(plan: Plan, engine: Engine) -> None:
    """`_check_key_types` by the key types alone (`key_types.sql` compares no key); nothing when
    they cannot be read (no target yet)."""
    try:
        types = engine.fetch_one(plan.preflight.key_types.sql)
    except AgentbatchError:
        return
    _check_key_types(plan, types.get("source_key_type"), types.get("target_key_type"))


def _check_key_types(plan: Plan, source_type: object, target_type: object) -> None:
    """Refuse a run whose source key differs in type from the target's: the engines compare such
    keys after an implicit cast, so '01' and 1 would be one key (a row left out as done, another
    row's answer kept for it, or two rows for one key)."""
    if not source_type or not target_type:
        return  # nothing to match: an empty target, or a full refresh of mode overwrite
    if _key_kind(str(source_type)) == _key_kind(str(target_type)):
        return
    key = plan.job.source.key
    raise UsageError(
        f"source key {key!r} is {source_type}, but {plan.job.output.table} holds it as "
        f"{target_type}: keys of different types can compare equal when they are not the same "
        "key (the text '01' and the number 1), so nothing was sent; give the source key the "
        "target's type (a CAST in `source.query`), write to a new output table, or replace "
        "this one (mode overwrite, which keeps none of its rows then)"
    )


def _check_columns(plan: Plan, engine: Engine, source_key_type: str | None = None) -> None:
    """Refuse a merge or append into a target whose columns are not the job's (`source.columns`
    edited since it was written): a MERGE writes the target's columns by name, so an added
    column would never appear, and a removed one fails the write after the calls are paid."""
    output = plan.job.output
    if output.mode == "overwrite":
        return  # (a dry run before the first run plans mode overwrite: no target is read)
    schema = engine.read_table(output.table, limit=0).schema
    held = schema.names
    wanted = [plan.job.source.key, *plan.job.source.columns, *RESULT_COLUMN_NAMES]
    have = {c.lower() for c in held}
    want = {c.lower() for c in wanted}
    added = [c for c in wanted if c.lower() not in have]
    removed = [c for c in held if c.lower() not in want]
    if not added and not removed:
        _check_response_type(plan, schema)
        _check_column_types(plan, engine, schema, source_key_type)
        return
    change = "; ".join(
        f"{what}: {', '.join(columns)}"
        for what, columns in (("new in the job", added), ("not in the job", removed))
        if columns
    )
    raise UsageError(
        f"{output.table}'s columns are not the job's ({change}), so nothing was sent: run once "
        "with mode overwrite (it rewrites the table with the job's columns and keeps every "
        "answer it holds for the current requests), or write to a new output table"
    )


def _check_column_types(
    plan: Plan, engine: Engine, schema: pa.Schema, source_key_type: str | None = None
) -> None:
    """Refuse a merge or append whose passthrough columns now hold values of another kind than
    the target's columns (a CSV column read as numbers one day, as text or with decimals the
    next): the write casts each value to the target's type, so it would fail after the calls
    were paid ('n/a' is no number), run after run, or store another value (4.5 as 4)."""
    columns = plan.job.source.columns
    held = {field.name.lower(): field.type for field in schema}
    changed = []
    narrowed: dict[str, pa.DataType] = {}  # column -> the target's type, where a value may not fit
    # The key's values are written into the target's key column too (its kind is checked with
    # the counts: `_check_key_types`).
    key = plan.job.source.key
    target_key = held.get(key.lower())
    if source_key_type and target_key is not None and _may_not_fit(source_key_type, target_key):
        narrowed[key] = target_key
    sql = _column_types_sql(plan, columns) if columns else None
    found = engine.fetch_one(sql) if sql is not None else {}
    for number, column in enumerate(columns if sql is not None else ()):
        source, target = found.get(f"_type_{number}"), held.get(column.lower())
        if source is None or target is None:
            continue  # no value to write (every selected value is NULL), or no such column
        have, want = _shape(target), _sql_kind(str(source))
        if isinstance(have, str) and want is not None and not _fits(want, have):
            changed.append(f"{column} is {str(source).lower()}, the table's {target}")
        elif _may_not_fit(str(source), target):
            narrowed[column] = target
    if not changed and narrowed:
        lost = _values_not_fitting(plan, engine, narrowed)
        changed = [
            f"{column} holds values its column ({narrowed[column]}) cannot hold as they are"
            for column in lost
        ]
    if changed:
        raise UsageError(
            f"{plan.job.output.table}'s columns hold values of another type than the source's "
            f"({'; '.join(changed)}): writing them would fail or change them, so nothing was "
            "sent: give the source column the table's type (a CAST in `source.query`), run "
            "once with mode overwrite (it rewrites the table with the source's types and keeps "
            "every answer it holds for the current requests), or write to a new output table"
        )


def failures_held(plan: Plan, engine: Engine) -> int | None:
    """How many selected rows the target holds as failures for their current request (None
    when the key-types statement, a project's template, does not name the target)."""
    from sqlglot import exp

    from agentbatch.sql import parsing

    tree = parsing.parse_one(plan.preflight.key_types.sql)
    output = None
    for expression in tree.expressions:
        if expression.alias_or_name == "target_key_type":
            output = expression.find(exp.Table)
    if output is None or "fingerprinted" not in _ctes(tree):
        return None
    prior = output.copy()
    prior.set("alias", exp.TableAlias(this=exp.to_identifier("prior")))

    def both(column: str) -> exp.Expression:
        name = exp.to_identifier(column, quoted=True)
        return exp.EQ(
            this=exp.column(name.copy(), table="prior"),
            expression=exp.column(name.copy(), table="fingerprinted"),
        )

    failed = (
        exp.select(exp.Count(this=exp.Star()))
        .from_(prior)
        .join("fingerprinted", on=exp.and_(both(plan.job.source.key), both("request_fingerprint")))
        .where(exp.column("error", table="prior").is_(exp.null()).not_())
    )
    tree.set("expressions", [exp.alias_(exp.Subquery(this=failed), "failed")])
    return int(engine.fetch_one(parsing.printed(tree)).get("failed") or 0)


# Digits of the largest value of an integer type (typeof() names), for a narrower target column.
_INTEGER_DIGITS = {
    **dict.fromkeys(["tinyint", "byte", "int1", "utinyint"], 3),
    **dict.fromkeys(["smallint", "short", "int2", "usmallint"], 5),
    **dict.fromkeys(["int", "integer", "int4", "uinteger"], 10),
    **dict.fromkeys(["bigint", "long", "int8"], 19),
    "ubigint": 20,
    **dict.fromkeys(["hugeint", "uhugeint"], 39),
}
_TARGET_INTEGER_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}


def _may_not_fit(source: str, target: pa.DataType) -> bool:
    """Whether some value of SQL type `source` (a typeof() name) may not fit a `target` column
    of the same kind as it is: an integer wider than the column's (a Parquet source written as
    BIGINT since, a CSV key past BIGINT), a decimal or double with more digits than the
    column's DECIMAL keeps (4.55 into DECIMAL(5,1) would be stored as 4.6)."""
    import pyarrow as pa

    name = source.strip().lower()
    head = name.split("(", 1)[0].strip()
    digits = _INTEGER_DIGITS.get(head)
    if pa.types.is_signed_integer(target):
        return digits is not None and digits > _TARGET_INTEGER_DIGITS[target.bit_width]
    if pa.types.is_decimal(target):
        whole = int(target.precision) - int(target.scale)
        if digits is not None:
            return digits > whole
        if head in ("decimal", "numeric"):
            params = name.partition("(")[2].rstrip(")").split(",")
            try:
                precision = int(params[0])
                scale = int(params[1]) if len(params) > 1 else 0
            except ValueError:
                return True
            return scale > int(target.scale) or precision - scale > whole
        return head in ("double", "float", "real", "float4", "float8")
    return False


def _does_not_fit(column: exp.Expression, target: pa.DataType) -> exp.Condition:
    """A condition true of a value of `column` that a `target` column (a signed integer or a
    DECIMAL: `_may_not_fit`) cannot hold as it is. Arithmetic, not TRY_CAST: Spark's printer
    writes TRY_CAST as CAST, which fails the statement under ANSI mode."""
    import pyarrow as pa
    from sqlglot import exp

    if pa.types.is_signed_integer(target):
        bits = target.bit_width
        low = exp.Literal.number(str(-(2 ** (bits - 1))))
        high = exp.Literal.number(str(2 ** (bits - 1) - 1))
        return exp.or_(
            exp.LT(this=column.copy(), expression=low), exp.GT(this=column.copy(), expression=high)
        )
    scale = int(target.scale)
    whole = int(target.precision) - scale
    too_large = exp.GTE(
        this=exp.Abs(this=column.copy()), expression=exp.Literal.number(f"1E{whole}")
    )
    rounded = exp.Round(this=column.copy(), decimals=exp.Literal.number(scale))
    return exp.or_(too_large, exp.NEQ(this=rounded, expression=column.copy()))


def _values_not_fitting(plan: Plan, engine: Engine, narrowed: dict[str, pa.DataType]) -> list[str]:
    """The columns of `narrowed` (column -> the target's type) holding a selected value that
    the target column cannot hold as it is: out of its range, or with more decimals."""
    from sqlglot import exp

    from agentbatch.sql import parsing

    tree = parsing.parse_one(plan.preflight.key_types.sql)
    if "src" not in _ctes(tree):
        return []
    asked = []
    names = list(narrowed)
    for number, column in enumerate(names):
        value = exp.column(exp.to_identifier(column, quoted=True))
        counted = exp.select(exp.CountIf(this=_does_not_fit(value, narrowed[column]))).from_("src")
        asked.append(exp.alias_(exp.Subquery(this=counted), f"_lost_{number}"))
    tree.set("expressions", asked)
    found = engine.fetch_one(parsing.printed(tree))
    return [column for number, column in enumerate(names) if found.get(f"_lost_{number}")]


def _column_types_sql(plan: Plan, columns: tuple[str, ...]) -> str | None:
    """The type of each passthrough column in the selection, from a row where it is not NULL:
    the key-types statement (the job's selection) asked about the columns instead (None when
    a project's own key_types.sql has no `src`)."""
    from sqlglot import exp

    from agentbatch.sql import parsing

    tree = parsing.parse_one(plan.preflight.key_types.sql)
    if "src" not in _ctes(tree):
        return None
    asked = []
    for number, column in enumerate(columns):
        name = exp.to_identifier(column, quoted=True)
        typed = (
            exp.select(exp.func("typeof", exp.column(name.copy())))
            .from_("src")
            .where(exp.column(name.copy()).is_(exp.null()).not_())
            .limit(1)
        )
        asked.append(exp.alias_(exp.Subquery(this=typed), f"_type_{number}"))
    tree.set("expressions", asked)
    return parsing.printed(tree)


def _ctes(tree: Any) -> set[str]:
    """The names of a statement's common table expressions."""
    from sqlglot import exp

    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


# The kinds of SQL type names (DuckDB's and Spark's typeof()), as `_shape` names Arrow's.
_SQL_KINDS = {
    **dict.fromkeys(_INTEGER_TYPES, "integer"),
    **dict.fromkeys(_STRING_TYPES, "string"),
    **dict.fromkeys(
        ["double", "float", "real", "decimal", "numeric", "float4", "float8"], "number"
    ),
    **dict.fromkeys(["boolean", "bool"], "boolean"),
    "date": "date",
}


def _sql_kind(type_name: str) -> str | None:
    """The kind of a scalar SQL type; None for any other (not compared)."""
    name = type_name.strip().lower()
    head = name.split("(", 1)[0].strip()
    if head.startswith("timestamp"):
        return "timestamp"
    if head.startswith("time"):  # TIME, TIME WITH TIME ZONE (a CSV column of times)
        return "time"
    return _SQL_KINDS.get(head)


def _fits(source: str, target: str) -> bool:
    """Whether values of kind `source` are written unchanged into a column of kind `target`."""
    if target not in ("integer", "number", "string", "boolean", "date", "timestamp", "time"):
        return True  # a kind not compared (a struct, a list, ...)
    widened = (source, target) in (("integer", "number"), ("date", "timestamp"))
    return source == target or target == "string" or widened


def _check_response_type(plan: Plan, schema: pa.Schema) -> None:
    """Refuse answers of another shape than the target's `response` (a `response_format` added,
    removed or given other fields since it was written): a MERGE would store a typed answer in a
    text column as the engine prints it, or fail after the calls."""
    changed = response_shape_change(plan, schema)
    if changed is None:
        return
    have, want = changed
    raise UsageError(
        f"{plan.job.output.table} holds answers as {have}, the job asks for {want} (its "
        "response_format changed since the table was written), so nothing was sent: run once "
        "with mode overwrite (it rewrites the table with the new answers), or write to a new "
        "output table"
    )


def response_shape_change(plan: Plan, schema: pa.Schema) -> tuple[pa.DataType, pa.DataType] | None:
    """(the target's `response` type, the job's) when the answers change shape: a text column
    against a struct, structs of other fields, or a field of another kind (text for a number);
    None when they keep it."""
    import pyarrow as pa

    fmt = plan.job.agent.response_format
    want = parse_response_format(fmt).arrow_type if fmt is not None else pa.string()
    have = schema.field("response").type
    return None if _shape(have) == _shape(want) else (have, want)


def _shape(type_: pa.DataType) -> object:
    """A type as far as every engine stores it alike: kinds, not widths (an INT read back as
    BIGINT, a timestamp in another unit or zone, is the same answer)."""
    import pyarrow as pa

    if pa.types.is_struct(type_):
        return frozenset((f.name.lower(), _shape(f.type)) for f in type_)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return ("list", _shape(type_.value_type))
    if pa.types.is_map(type_):
        return ("map", _shape(type_.key_type), _shape(type_.item_type))
    for kind, test in (
        ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("integer", pa.types.is_integer),
        ("number", lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t)),
        ("boolean", pa.types.is_boolean),
        ("timestamp", pa.types.is_timestamp),
        ("date", pa.types.is_date),
        ("time", pa.types.is_time),
    ):
        if test(type_):
            return kind
    return str(type_)


def repeated_keys_message(plan: Plan, engine: Engine, repeated: int) -> str:
    sample = engine.fetch_batches(plan.preflight.repeated_keys.sql)
    shown = [f"{row['key']!r} x{row['copies']}" for batch in sample for row in batch.to_pylist()]
    key = plan.job.source.key
    return (
        f"source key {key!r} is not unique: {repeated} value(s) occur more than once "
        f"({', '.join(shown[:5])}{', ...' if repeated > 5 else ''}); one key gets one answer, "
        "so nothing was sent: remove the duplicates, narrow `source.where`, or choose a key "
        "that is unique"
    )
