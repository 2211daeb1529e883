"""Write statements on tables without MERGE or atomic replace (parquet folders, v1 catalog tables).

Every write computes the table's complete new content as a DataFrame, writes it as a new version
and swaps it in (spark_files.py: an atomic link swap; spark_catalog.py: a rename):

    CREATE TABLE [IF NOT EXISTS] t AS q     new = q (nothing when t exists and IF NOT EXISTS)
    CREATE OR REPLACE TABLE t AS q          new = q
    INSERT INTO t q / INSERT OVERWRITE t q  new = t UNION ALL q / new = q
    MERGE INTO t USING s ON t.k = s.k       new = (t rows whose k is not in s) UNION ALL s
      WHEN MATCHED THEN UPDATE SET *
      WHEN NOT MATCHED THEN INSERT *
    DROP TABLE [IF EXISTS] t

A MERGE source is evaluated once (checkpointed) before it is used twice: it may call the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlglot import exp

from agentbatch.engines.merge_rules import DUPLICATE_MATCH_MESSAGE
from agentbatch.errors import EngineError, NotSupportedError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

QueryRunner = Callable[[exp.Expression], "DataFrame"]


class SwappableTable(Protocol):
    """A table replaced whole: its new content is written aside, then swapped in."""

    def exists(self) -> bool: ...

    def read(self, spark: SparkSession) -> DataFrame: ...

    def write(self, df: DataFrame) -> None: ...

    def drop(self) -> None: ...

    def holds_no_rows(self) -> bool:
        """True when the table is known to hold no row without running a Spark job (False:
        it holds rows, or that is not known so cheaply)."""
        ...


SUPPORTED = (
    "CREATE TABLE ... AS, CREATE OR REPLACE TABLE ... AS, INSERT, MERGE (by key, *), DROP TABLE"
)


def write_file_table(
    spark: SparkSession, tree: exp.Expression, table: SwappableTable, name: str, query: QueryRunner
) -> None:
    """Run one write statement `tree` whose target is `table` (called `name` in messages)."""
    if isinstance(tree, exp.Create):
        _create(tree, table, name, query)
    elif isinstance(tree, exp.Insert):
        _insert(spark, tree, table, name, query)
    elif isinstance(tree, exp.Merge):
        _merge(spark, tree, table, name, query)
    elif isinstance(tree, exp.Drop):
        if not table.exists() and not tree.args.get("exists"):
            raise EngineError(f"spark engine: table {name} does not exist")
        table.drop()
    else:
        raise NotSupportedError(
            f"spark engine: file tables support {SUPPORTED}; not {tree.key.upper()}"
        )


def _create(tree: exp.Create, table: SwappableTable, name: str, query: QueryRunner) -> None:
    kind = str(tree.args.get("kind") or "").upper()
    select = tree.expression
    if kind != "TABLE" or select is None:
        raise NotSupportedError(f"spark engine: file tables support {SUPPORTED}")
    if table.exists():
        if tree.args.get("exists"):
            return
        if not tree.args.get("replace"):
            raise EngineError(f"spark engine: table {name} already exists")
    table.write(query(select))


def _insert(
    spark: SparkSession, tree: exp.Insert, table: SwappableTable, name: str, query: QueryRunner
) -> None:
    if isinstance(tree.this, exp.Schema) or tree.args.get("partition"):
        raise NotSupportedError(
            "spark engine: INSERT into file tables takes no column list or partition"
        )
    rows = query(tree.expression)
    if tree.args.get("overwrite"):
        table.write(rows)
        return
    old = _existing(spark, table, name)
    table.write(old.unionByName(_conform(rows, old, name)))


def _merge(
    spark: SparkSession, tree: exp.Merge, table: SwappableTable, name: str, query: QueryRunner
) -> None:
    from pyspark.sql import functions as F

    keys = merge_keys(tree)
    using = tree.args.get("using")
    if isinstance(using, exp.Subquery):
        source_query: exp.Expression = using.this
    elif isinstance(using, exp.Table):
        source_query = exp.select("*").from_(using.copy())
    else:
        raise NotSupportedError("spark engine: MERGE ... USING takes a table or a subquery")
    old = _existing(spark, table, name)
    source = _conform(query(source_query), old, name)
    if table.holds_no_rows():
        # No target row for a source row to match (a run's first write into the table it just
        # created): the new table is the source rows, read once by the write. Delta's MERGE
        # inserts every one of them alike, and refuses nothing.
        table.write(source)
        return
    # Evaluated once: the anti-join and the union below both read it.
    source = source.localCheckpoint(eager=True)
    _refuse_duplicate_matches(source, old, keys)
    kept = old.join(source.select(*keys).distinct(), on=keys, how="left_anti")
    # A join on column names puts those columns first: the table keeps its own order, as Delta's
    # MERGE does (an `append` run merges on the key and the request fingerprint).
    kept = kept.select(*[F.col(f"`{c}`") for c in old.columns])
    table.write(kept.unionByName(source))


def _refuse_duplicate_matches(source: DataFrame, old: DataFrame, keys: list[str]) -> None:
    """Delta refuses a MERGE where several source rows match one target row (merge_rules.py)."""
    matched = source.join(old.select(*keys).distinct(), on=keys, how="left_semi")
    if matched.groupBy(*keys).count().where("count > 1").limit(1).count():
        raise EngineError(f"spark engine: {DUPLICATE_MATCH_MESSAGE}")


def merge_keys(tree: exp.Merge) -> list[str]:
    """The keys of `MERGE ... ON t.k = s.k [AND t.j = s.j ...] WHEN MATCHED UPDATE SET *
    WHEN NOT MATCHED INSERT *`."""
    shape = (
        "file tables support MERGE INTO t USING s ON t.key = s.key [AND t.other = s.other] "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )
    condition = tree.args.get("on")
    parts: list[Any] = list(condition.flatten()) if isinstance(condition, exp.And) else [condition]
    if not all(
        isinstance(part, exp.EQ)
        and isinstance(part.this, exp.Column)
        and isinstance(part.expression, exp.Column)
        and part.this.name == part.expression.name
        for part in parts
    ):
        raise NotSupportedError(f"spark engine: {shape}")
    whens = tree.args.get("whens")
    clauses = whens.expressions if isinstance(whens, exp.Whens) else []
    forms = set()
    for when in clauses:
        then = when.args.get("then")
        if when.args.get("condition") is not None or when.args.get("source"):
            raise NotSupportedError(f"spark engine: {shape}")
        if when.args.get("matched") and isinstance(then, exp.Update) and _is_star(then.expressions):
            forms.add("update")
        elif (
            not when.args.get("matched")
            and isinstance(then, exp.Insert)
            and isinstance(then.this, exp.Star)
        ):
            forms.add("insert")
        else:
            raise NotSupportedError(f"spark engine: {shape}")
    if forms != {"update", "insert"} or len(clauses) != 2:
        raise NotSupportedError(f"spark engine: {shape}")
    return [part.this.name for part in parts if isinstance(part, exp.EQ)]


def _is_star(expressions: list[exp.Expression]) -> bool:
    return len(expressions) == 1 and isinstance(expressions[0], exp.Star)


def _existing(spark: SparkSession, table: SwappableTable, name: str) -> DataFrame:
    if not table.exists():
        raise EngineError(f"spark engine: table {name} does not exist")
    return table.read(spark)


def _conform(rows: DataFrame, target: DataFrame, name: str) -> DataFrame:
    """`rows` with the target's columns, in its order and types (as INSERT * would store them)."""
    from pyspark.sql import functions as F

    have = {c.lower(): c for c in rows.columns}
    want = [f.name for f in target.schema.fields]
    missing = [c for c in want if c.lower() not in have]
    extra = sorted(set(have) - {c.lower() for c in want})
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"not in the table: {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise EngineError(f"spark engine: the rows do not match the columns of {name}: {detail}")
    return rows.select(
        [
            F.col(f"`{have[f.name.lower()]}`").cast(f.dataType).alias(f.name)
            for f in target.schema.fields
        ]
    )
