"""Delta's MERGE rule, for engines whose MERGE is not Delta's.

Delta refuses a MERGE in which several source rows match one target row (for an UPDATE or DELETE
clause): it cannot tell which one should win. DuckDB's MERGE quietly takes one, and the Spark
emulation for file tables (spark_writes.py) would keep them all, so both check first and refuse
with Delta's error class. Source: the Delta Lake / Databricks error-class reference,
DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE; see docs/databricks-behaviour.md.

Source rows that match no target row are inserted, duplicates included, as Delta does.

`UPDATE SET *` and `INSERT *` are Delta's by-name forms: every column of the target, from the
source column of the same name; a target column the source lacks is an analysis error, a source
column the target lacks is left out. DuckDB's stars are positional (a source with its columns in
another order would swap values), so they are written out by name here.
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


UNRESOLVED_CLASS = "DELTA_MERGE_UNRESOLVED_EXPRESSION"


@dataclass(frozen=True)
class CheckedMerge:
    """A DuckDB MERGE split so its source is evaluated once (it may call an agent)."""

    materialize: str  # CREATE TEMP TABLE <source> AS <the MERGE's source>
    find_duplicate: str  # a row when some target row is matched by several source rows
    target_columns: str  # a query whose result has the target's columns
    source_columns: str  # a query whose result has the materialized source's columns
    tree: exp.Merge  # the MERGE, reading the materialized source
    drop: str
    # A row when some source row matches several target rows (then each of them is updated).
    find_fanout: str

    def merge(self, target_columns: list[str], source_columns: list[str]) -> str:
        """The MERGE in DuckDB's SQL, its `*` actions written out by name (see the module)."""
        return by_name(self.tree, target_columns, source_columns).sql("duckdb")

    def replacing(self, target_columns: list[str]) -> tuple[str, str] | None:
        """`WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *` as a DELETE of the
        matched target rows and an INSERT of every source row, or None for any other MERGE.

        The same table when no row is matched more than once either way (`find_duplicate`,
        `find_fanout`): a matched row's update sets every column from its source row, which is
        what the inserted row holds. DuckDB keeps an UPDATE's rows in memory, past its
        memory_limit (a MERGE replacing a million answers fails); deleted and inserted rows
        spill."""
        whens = self.tree.args.get("whens")
        clauses = whens.expressions if isinstance(whens, exp.Whens) else []
        plain = {
            (bool(when.args.get("matched")), type(when.args.get("then")))
            for when in clauses
            if _is_star(when.args.get("then"))
            and not when.args.get("condition")
            and not when.args.get("source")
        }
        if len(clauses) != 2 or plain != {(True, exp.Update), (False, exp.Insert)}:
            return None
        target = self.tree.this
        source = self.tree.args["using"]
        delete = exp.Delete(
            this=target.copy(),
            using=[source.copy()],
            where=exp.Where(this=self.tree.args["on"].copy()),
        )
        plain_target = target.copy()
        plain_target.set("alias", None)
        alias = source.alias_or_name
        insert = exp.Insert(
            this=exp.Schema(this=plain_target, expressions=[_col(c).this for c in target_columns]),
            expression=exp.select(*(_col(c, alias) for c in target_columns)).from_(source.copy()),
        )
        return delete.sql("duckdb"), insert.sql("duckdb")


def by_name(tree: exp.Merge, target_columns: list[str], source_columns: list[str]) -> exp.Merge:
    """`tree` with `UPDATE SET *` / `INSERT *` as Delta reads them: each target column from the
    source column of that name. ValueError (Delta's class) when the source lacks one."""
    whens = tree.args.get("whens")
    clauses = whens.expressions if isinstance(whens, exp.Whens) else []
    starred = [w.args.get("then") for w in clauses if _is_star(w.args.get("then"))]
    if not starred:
        return tree
    present = {c.lower() for c in source_columns}
    missing = [c for c in target_columns if c.lower() not in present]
    if missing:
        raise ValueError(
            f"[{UNRESOLVED_CLASS}] Cannot resolve {missing[0]} in UPDATE SET * / INSERT * given "
            f"the source's columns {', '.join(source_columns)}"
        )
    alias = tree.args["using"].alias_or_name
    out = tree.copy()
    for when in out.args["whens"].expressions:
        then = when.args.get("then")
        if isinstance(then, exp.Update) and _is_star(then):
            then.set(
                "expressions",
                [exp.EQ(this=_col(c), expression=_col(c, alias)) for c in target_columns],
            )
        elif isinstance(then, exp.Insert) and _is_star(then):
            then.set("this", exp.Tuple(expressions=[_col(c) for c in target_columns]))
            then.set("expression", exp.Tuple(expressions=[_col(c, alias) for c in target_columns]))
    return out


def _is_star(action: object) -> bool:
    if isinstance(action, exp.Update):
        return [type(e) for e in action.expressions] == [exp.Star]
    return isinstance(action, exp.Insert) and isinstance(action.this, exp.Star)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(
        this=exp.to_identifier(name, quoted=True),
        table=exp.to_identifier(table) if table else None,
    )


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
    fanout = (
        exp.select("1")
        .from_(source_ref.copy())
        .join(target.copy(), on=condition.copy())
        .group_by(exp.column("rowid", table=alias))
        .having("count(*) > 1")
        .limit(1)
    )
    merge = tree.copy()
    merge.set("using", source_ref)
    plain_target = target.copy()
    plain_target.set("alias", None)
    return CheckedMerge(
        materialize=materialize,
        find_duplicate=find.sql("duckdb"),
        target_columns=exp.select("*").from_(plain_target).limit(0).sql("duckdb"),
        source_columns=f"SELECT * FROM {temp.sql('duckdb')} LIMIT 0",
        tree=merge,
        drop=f"DROP TABLE IF EXISTS {temp.sql('duckdb')}",
        find_fanout=fanout.sql("duckdb"),
    )
