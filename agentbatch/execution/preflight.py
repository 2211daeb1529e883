"""Checks before a run sends anything, in the user's terms.

* `check_mappings`: every `--table NAME=PATH` and `--endpoint NAME=URL` must name a table or an
  endpoint of the job; a mapping that matches nothing is an error listing what it could match.
* `check_source`: with an engine that can reach the source (the local target: mapped files and the
  local warehouse), the source table must exist, and each SQL value of the spec (`source.key`,
  `source.columns`, `source.where`, `request`) must bind against it. A mistake names the spec key it
  came from and lists the source's columns, before any agent call.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from agentbatch.errors import AgentbatchError, UsageError
from agentbatch.execution.value_errors import spec_sql
from agentbatch.spec.loader import where_in_file
from agentbatch.spec.models import agent_url_problem
from agentbatch.spec.yaml_source import KeyPath, dotted
from agentbatch.sql import quoting

if TYPE_CHECKING:
    from agentbatch.engines.base import Engine
    from agentbatch.planning.definition import Plan
    from agentbatch.spec.models import Job


def binary_file_paths(tree: exp.Expr) -> list[str]:
    from agentbatch.engines.binary_files import binary_file_calls

    try:
        return [path for _, path in binary_file_calls(tree)]
    except UsageError:
        return []


def job_tables(job: Job) -> dict[str, str]:
    """The tables a job reads and writes, each with the spec key that names it."""
    tables: dict[str, str] = {}
    if job.source.table is not None:
        tables[job.source.table] = "source.table"
    elif job.source.query:
        try:
            tree = sqlglot.parse_one(job.source.query, read=quoting.DIALECT)
        except (sqlglot.errors.SqlglotError, TypeError):  # TypeError: sqlglot compiled
            tree = None
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)} if tree else set()
        for node in tree.find_all(exp.Table) if tree else ():
            # Only a one-part name can be a CTE (`main.s.src` is a table beside a CTE `src`).
            if node.name and (node.db or node.name.lower() not in ctes):
                tables[".".join(part.name for part in node.parts)] = "source.query"
        # A folder read with read_files(..., format => 'binaryFile') is mapped like a table.
        for path in binary_file_paths(tree) if tree else ():
            tables[path] = "source.query read_files"
    # A subquery in an SQL value reads a table too (`where: "id IN (SELECT id FROM ...)"`).
    values = {"source.where": job.source.where}
    if isinstance(job.request, dict):
        values.update({f"request.{field}": sql for field, sql in job.request.items()})
    else:
        values["request"] = job.request
    for key, sql in values.items():
        for name in _tables_read_by(sql):
            tables.setdefault(name, key)
    tables[job.output.table] = "output.table"
    return tables


def _tables_read_by(expression: str | None) -> list[str]:
    if not expression:
        return []
    try:
        tree = sqlglot.parse_one(f"SELECT {expression}", read=quoting.DIALECT)
    except (sqlglot.errors.SqlglotError, TypeError):  # TypeError: sqlglot compiled
        return []
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return [
        ".".join(part.name for part in node.parts)
        for node in tree.find_all(exp.Table)
        if node.name and (node.db or node.name.lower() not in ctes)
    ]


def canonical(name: str, catalog: str = "main", schema: str = "default") -> tuple[str, ...]:
    try:
        parts = quoting.table_parts(name)
    except quoting.SqlValueError:
        return (name.lower(),)
    padded = (catalog, schema)[: 3 - len(parts)] + parts
    return tuple(part.lower() for part in padded)


def check_mappings(
    job: Job | Sequence[Job],
    tables: Iterable[str] = (),
    endpoints: Iterable[str] = (),
    *,
    extra_endpoints: Iterable[str] = (),
    derived_outputs: bool = False,
) -> None:
    """UsageError when a `--table` or `--endpoint` mapping names nothing the job(s) use.

    `derived_outputs`: tables named after an output table (`<output>_scores`, ...) count too."""
    jobs = [job] if not isinstance(job, Sequence) else list(job)
    known: dict[str, str] = {}
    for one in jobs:
        known.update(job_tables(one))
    by_name = {canonical(name): name for name in known}
    outputs = [canonical(one.output.table) for one in jobs]
    for name in tables:
        full = canonical(name)
        derived = derived_outputs and any(
            full[:-1] == out[:-1] and full[-1].startswith(out[-1] + "_") for out in outputs
        )
        if full not in by_name and not derived:
            choices = ", ".join(f"{table} ({key})" for table, key in known.items())
            raise UsageError(
                f"--table {name}=...: the job uses no table {name}{_suggest(name, known)}; "
                f"its tables: {choices}"
            )
    used = list(dict.fromkeys([*(one.agent.endpoint for one in jobs), *extra_endpoints]))
    for name in endpoints:
        if name not in used:
            raise UsageError(
                f"--endpoint {name}=...: the job calls no endpoint {name}{_suggest(name, used)}; "
                f"it calls: {', '.join(used)}"
            )
        address = endpoints[name] if isinstance(endpoints, Mapping) else None
        problem = agent_url_problem(str(address).strip()) if address is not None else None
        if problem:
            raise UsageError(f"--endpoint {name}=...: {problem}")


def check_source(
    job: Job,
    engine: Engine,
    tables: Mapping[str, Any],
    *,
    warehouse: Path | None = None,
    origin: str = "",
) -> None:
    """The source exists and each SQL value of the spec binds against its columns.

    Errors start with `origin:line: ` (the job file, the line of the key) when given."""
    source = job.source

    def at(path: KeyPath) -> str:
        return f"{where_in_file(origin, path)}: " if origin else ""

    if source.table is not None:
        if not engine.table_exists(source.table):
            raise UsageError(
                at(("source", "table")) + _no_such_table(source.table, tables, warehouse)
            )
        relation: str = quoting.table(source.table)
        what = source.table
    elif source.query:
        relation = f"({quoting.query(source.query)}) AS source_query"
        what = "source.query"
    else:
        return
    try:
        columns = list(engine.fetch_one(f"SELECT * FROM {relation} LIMIT 0"))
    except AgentbatchError as err:
        raise UsageError(f"{at(('source', 'query'))}source.query: {err}") from None
    for path, sql in spec_sql(job):
        probe = (
            f"SELECT 1 FROM {relation} WHERE ({sql}) LIMIT 0"
            if path == ("source", "where")
            else f"SELECT {sql} FROM {relation} LIMIT 0"
        )
        try:
            engine.fetch_one(probe)
        except AgentbatchError as err:
            problem = _column_problem(dotted(path), sql, str(err), columns, what)
            raise UsageError(at(path) + problem) from None


def _column_problem(key: str, sql: str, message: str, columns: list[str], what: str) -> str:
    lowered = {column.lower() for column in columns}
    try:
        names = [c.name for c in sqlglot.parse_one(sql, read=quoting.DIALECT).find_all(exp.Column)]
    except (sqlglot.errors.SqlglotError, TypeError):  # TypeError: sqlglot compiled
        names = []
    missing = [name for name in dict.fromkeys(names) if name.lower() not in lowered]
    listed = ", ".join(columns)
    if missing:
        name = missing[0]
        return (
            f"{key}: column {name!r} is not in {what}{_suggest(name, columns)}; "
            f"its columns: {listed}"
        )
    detail = message.removeprefix("local engine: ")
    return f"{key}: {detail} (columns of {what}: {listed})"


def _no_such_table(name: str, tables: Mapping[str, Any], warehouse: Path | None) -> str:
    mapped = ", ".join(sorted(tables)) or "none"
    where = f" and is not in the local warehouse ({warehouse})" if warehouse else ""
    return (
        f"source.table: table {name} is not mapped with --table (mapped: {mapped}){where}; "
        f"map it to a file: --table {name}=PATH (CSV, Parquet, JSON or a Delta folder)"
    )


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_plan(plan: Plan, *, origin: str = "", required: bool = True) -> bool:
    """The checks before anything is sent: the run's `--table`/`--endpoint` mappings name the
    job's tables and endpoint, and on the local target the source binds every SQL value of the
    spec. False when the source was not checked (`required=False` and not reachable)."""
    check_mappings(plan.job, plan.options.tables, plan.options.endpoints)
    return check_local_source(plan, required=required, origin=origin)


def check_local_source(
    plan: Plan, *, required: bool = True, origin: str = "", engine: Engine | None = None
) -> bool:
    """`check_source` on the local target, with the run's table mappings; False when skipped.

    With `required=False` (plan, validate) a source that is neither mapped nor in the local
    warehouse is not an error: the columns are simply not checked. `engine`: the run's own,
    opened for the plan (left open); else one is opened for the check."""
    from agentbatch.execution.runner import WAREHOUSE_DIR, open_engine, root_of

    if plan.target.engine != "local":
        return False
    output = canonical(plan.job.output.table)
    inputs = {name: path for name, path in plan.options.tables.items() if canonical(name) != output}
    own = engine is None
    engine = engine or open_engine(plan, inputs, [])
    try:
        source = plan.job.source.table
        if not required and source is not None and not engine.table_exists(source):
            return False
        warehouse = root_of(plan) / WAREHOUSE_DIR
        check_source(plan.job, engine, inputs, warehouse=warehouse, origin=origin)
    finally:
        if own:
            engine.close()
    return True
