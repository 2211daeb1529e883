"""Where a source value the job's SQL cannot convert comes from: the key of the job file whose
SQL value fails for it (`jobs/x.yml:6: request: ...`). Apart from preflight.py, which imports the
runner: the runner imports this."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentbatch.errors import AgentbatchError
from agentbatch.spec.loader import where_in_file
from agentbatch.spec.yaml_source import KeyPath, dotted
from agentbatch.sql import quoting

if TYPE_CHECKING:
    from agentbatch.engines.base import Engine
    from agentbatch.spec.models import Job


def locate_value_error(job: Job, engine: Engine, err: Exception, origin: str = "") -> Exception:
    """`err`, a source value the run's SQL did not convert (the engine's `SourceValueError`),
    named by the job's SQL value that fails for it (`jobs/x.yml:6: request: ...`), found by
    evaluating each over the source (where the source.where keeps the row); `err` itself when
    none fails alone."""
    source = job.source
    if source.table is not None:
        relation: str = quoting.table(source.table)
    elif source.query:
        relation = f"({quoting.query(source.query)}) AS source_query"
    else:
        return err
    # The where clause first: the other values are computed for the rows it keeps.
    values = sorted(spec_sql(job), key=lambda value: value[0] != ("source", "where"))
    kept = dict(values).get(("source", "where"))
    rows = f"{relation} WHERE ({kept})" if kept else relation
    for path, sql in values:
        if path == ("source", "where"):
            probe = f"SELECT count(*) AS n FROM {relation} WHERE ({sql})"
        else:
            # count(v): every value computed (an unused one could be left out).
            probe = f"SELECT count(v) AS n FROM (SELECT {sql} AS v FROM {rows}) AS probe"
        try:
            engine.fetch_one(probe)
        except AgentbatchError as found:
            if type(found) is not type(err):
                continue
            at = f"{where_in_file(origin, path)}: " if origin else ""
            detail = str(found).removeprefix("local engine: ").removeprefix("databricks-sql: ")
            return type(err)(f"{at}{dotted(path)}: a source value does not convert: {detail}")
    return err


def spec_sql(job: Job) -> list[tuple[KeyPath, str]]:
    """Each SQL value of the spec, by its key path in the job file."""
    source = job.source
    values: list[tuple[KeyPath, str]] = [(("source", "key"), quoting.identifier(source.key))]
    values += [
        (("source", "columns", number), quoting.identifier(column))
        for number, column in enumerate(source.columns)
    ]
    if source.where:
        values.append((("source", "where"), quoting.expression(source.where, what="where clause")))
    if isinstance(job.request, dict):
        values += [
            (("request", name), quoting.expression(sql)) for name, sql in job.request.items()
        ]
    else:
        values.append((("request",), quoting.expression(job.request, what="request")))
    if job.files is not None:
        values.append((("files", "content"), quoting.expression(job.files.content)))
        if job.files.name:
            values.append((("files", "name"), quoting.expression(job.files.name)))
    return values
