"""Delta's MERGE rule, for engines whose MERGE is not Delta's.

Delta refuses a MERGE in which several source rows match one target row (for an UPDATE or DELETE
clause): it cannot tell which one should win. DuckDB's MERGE quietly takes one, and the Spark
emulation for file tables (spark_writes.py) would keep them all, so both check first and refuse
with Delta's error class. Source: the Delta Lake / Databricks error-class reference,
DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE; see docs/databricks-behaviour.md.

Source rows that match no target row are inserted, duplicates included, as Delta does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

DUPLICATE_MATCH_CLASS = "DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE"
DUPLICATE_MATCH_MESSAGE = (
    f"[{DUPLICATE_MATCH_CLASS}] Cannot perform Merge as multiple source rows matched and "
    "attempted to modify the same target row in the Delta table in possibly conflicting ways"
)
_SOURCE = "agentbatch_merge_source"


@dataclass(frozen=True)
class CheckedMerge:
    """A DuckDB MERGE split so its source is evaluated once (it may call an agent)."""

    materialize: str  # CREATE TEMP TABLE <source> AS <the MERGE's source>
    find_duplicate: str  # a row when some target row is matched by several source rows
    merge: str  # the MERGE, reading the materialized source
    drop: str


def has_matched_clause(tree: exp.Merge) -> bool:
    whens = tree.args.get("whens")
    clauses = whens.expressions if isinstance(whens, exp.Whens) else []
    return any(when.args.get("matched") for when in clauses)


def checked_duckdb_merge(tree: exp.Merge, source_name: str = _SOURCE) -> CheckedMerge | None:
    """The steps of `tree` (a MERGE in DuckDB's dialect) with Delta's check; None when it has no
    WHEN MATCHED clause, so nothing can match twice."""
    if not has_matched_clause(tree):
        return None
    using = tree.args.get("using")
    target = tree.this
    condition = tree.args.get("on")
    if not isinstance(target, exp.Table) or condition is None or using is None:
        return None
    alias = using.alias_or_name
    if isinstance(using, exp.Subquery):
        source_query: exp.Expression = using.this.copy()
    elif isinstance(using, exp.Table):
        plain = using.copy()
        plain.set("alias", None)
        source_query = exp.select("*").from_(plain)
    else:
        return None
    temp = exp.to_identifier(source_name)
    materialize = (
        f"CREATE OR REPLACE TEMP TABLE {temp.sql('duckdb')} AS {source_query.sql('duckdb')}"
    )
    source_ref = exp.Table(this=temp.copy(), alias=exp.TableAlias(this=exp.to_identifier(alias)))
    target_rowid = exp.column("rowid", table=target.alias_or_name)
    find = (
        exp.select("1")
        .from_(target.copy())
        .join(source_ref.copy(), on=condition.copy())
        .group_by(target_rowid)
        .having("count(*) > 1")
        .limit(1)
    )
    merge = tree.copy()
    merge.set("using", source_ref)
    return CheckedMerge(
        materialize=materialize,
        find_duplicate=find.sql("duckdb"),
        merge=merge.sql("duckdb"),
        drop=f"DROP TABLE IF EXISTS {temp.sql('duckdb')}",
    )
