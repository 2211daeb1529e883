"""Qualify and map Unity Catalog names (`catalog.schema.table`) for a local SQL engine.

Every table reference is made fully qualified with the session's namespace (CTE names left
alone), then its catalog and schema are mapped to what the engine calls them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from sqlglot import exp

from .context import Namespace

# (catalog, schema) -> (engine catalog or None to drop it, engine schema)
NameMapper = Callable[[str, str], tuple[str | None, str]]

# Unity Catalog's limits on every object name (catalog, schema, table, view): "Object names cannot
# exceed 255 characters", and no period, space, forward slash, ASCII control character (00-1F) or
# DELETE (7F), even within backticks (docs.databricks.com sql/language-manual/sql-ref-names;
# data-governance/unity-catalog/requirements). DuckDB and Spark take any of them. The too-long
# message is a managed table's CREATE as a warehouse words it (databricks/dbt-databricks#1309,
# #1391: "RPC CreateStagingTable Field managedcatalog.StagingTableInfo.name: name ... too long.
# Maximum length is 255 characters."); the other's class and wording: ASSUMPTION.
UC_NAME_LIMIT = 255
_UC_FORBIDDEN = re.compile(r"[. /\x00-\x1f\x7f]")


def _created(tree: exp.Expression) -> exp.Table | None:
    """The table, view or schema a statement creates or renames a table to (not a temporary view,
    which lives in the session, not in Unity Catalog)."""
    if isinstance(tree, exp.Create):
        kind = str(tree.args.get("kind") or "").upper()
        if kind not in ("TABLE", "VIEW", "SCHEMA", "DATABASE") or _created_temporary(tree):
            return None
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        return target if isinstance(target, exp.Table) else None
    if isinstance(tree, exp.Alter):
        for action in tree.args.get("actions") or []:
            if isinstance(action, exp.AlterRename) and isinstance(action.this, exp.Table):
                return action.this
    return None


def check_unity_catalog_names(tree: exp.Expression) -> None:
    """Refuse, as Unity Catalog does, a statement creating an object whose name breaks its rules."""
    target = _created(tree)
    if target is None:
        return
    for part in target.parts:
        name = part.name
        if len(name) > UC_NAME_LIMIT:
            raise ValueError(
                "Invalid input: RPC CreateStagingTable Field managedcatalog.StagingTableInfo.name: "
                f'name "{name}" too long. Maximum length is {UC_NAME_LIMIT} characters.'
            )
        if _UC_FORBIDDEN.search(name):
            raise ValueError(
                f"[INVALID_SCHEMA_OR_RELATION_NAME] `{name}` is not a valid name for tables/schemas"
                ": a Unity Catalog name has no period, space, forward slash or control character. "
                "SQLSTATE: 42602"
            )


def _schema_ddl_target(tree: exp.Expression) -> exp.Table | None:
    """The schema name of `CREATE SCHEMA` / `DROP SCHEMA`, held as a Table (db[.catalog])."""
    kind = str(tree.args.get("kind") or "").upper()
    if kind not in ("SCHEMA", "DATABASE"):
        return None
    if isinstance(tree, exp.Create) and isinstance(tree.this, exp.Table):
        return tree.this
    if isinstance(tree, exp.Drop):
        tables = tree.args.get("tables") or []
        if tables and isinstance(tables[0], exp.Table):
            return tables[0]
        if isinstance(tree.this, exp.Table):
            return tree.this
    return None


def _rename_schema_ddl(target: exp.Table, namespace: Namespace, mapper: NameMapper) -> None:
    schema = target.args.get("db") or target.this
    catalog = target.args.get("catalog")
    catalog_name = catalog.name if catalog is not None else namespace.catalog
    new_catalog, new_schema = mapper(catalog_name, schema.name)
    target.set("this", None)
    target.set("db", exp.to_identifier(new_schema))
    target.set("catalog", exp.to_identifier(new_catalog) if new_catalog else None)


def _created_temporary(tree: exp.Expression) -> exp.Table | None:
    """The name a `CREATE TEMPORARY VIEW` defines (session-scoped, never qualified)."""
    if not isinstance(tree, exp.Create):
        return None
    props = tree.args.get("properties")
    temporary = props is not None and any(
        isinstance(p, exp.TemporaryProperty) for p in props.expressions
    )
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    return target if temporary and isinstance(target, exp.Table) else None


def temporary_view_name(tree: exp.Expression) -> str | None:
    target = _created_temporary(tree)
    return target.name if target is not None else None


def qualify_and_map(
    tree: exp.Expression,
    namespace: Namespace,
    mapper: NameMapper,
    *,
    unqualified: Collection[str] = (),
) -> exp.Expression:
    """Rewrite `tree` in place (and return it) with engine-side table names.

    One-part names get the session's catalog and schema, two-part names its catalog, except
    CTE names and the `unqualified` ones (the session's temporary views).
    """
    schema_target = _schema_ddl_target(tree)
    if schema_target is not None:
        _rename_schema_ddl(schema_target, namespace, mapper)
        return tree
    if isinstance(tree, exp.Use):
        return tree
    local = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    local |= {name.lower() for name in unqualified}
    temporary = _created_temporary(tree)
    for table in tree.find_all(exp.Table):
        if table is temporary or not isinstance(table.this, exp.Identifier):
            continue  # the temp view being defined; table functions: read_files(...), range(...)
        db = table.args.get("db")
        catalog = table.args.get("catalog")
        if db is None and table.name.lower() in local:
            continue
        catalog_name = catalog.name if catalog is not None else namespace.catalog
        schema_name = db.name if db is not None else namespace.schema
        new_catalog, new_schema = mapper(catalog_name, schema_name)
        table.set("db", exp.to_identifier(new_schema))
        table.set("catalog", exp.to_identifier(new_catalog) if new_catalog else None)
    return tree


# Delta, without column mapping, refuses a column name (a nested field's too) with any of
# ` ,;{}()\n\t=`: delta-io/delta SchemaUtils.checkFieldNames ("Parquet doesn't accept the
# characters ' ,;{}()\n\t='"), error class DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES (its first
# sentence as public reports quote it; the rest: ASSUMPTION); docs.databricks.com
# delta/column-mapping ("allows characters not supported by Parquet in column names, such as
# spaces"). DuckDB and Spark's Parquet tables take them. Checked where a statement names the new
# table's columns: its column list, or the outermost SELECT's named columns (and the fields of a
# STRUCT it casts to) of a CREATE TABLE ... AS.
DELTA_INVALID_COLUMN_CHARACTERS = " ,;{}()\n\t="
_COLUMN_MAPPING = "delta.columnmapping.mode"


def _column_mapping(tree: exp.Create) -> bool:
    props = tree.args.get("properties")
    for prop in props.expressions if props is not None else []:
        if isinstance(prop, exp.Property) and prop.name.lower() == _COLUMN_MAPPING:
            value = prop.args.get("value")
            return value is not None and value.name.lower() in ("name", "id")
    return False


def _new_column_names(tree: exp.Create) -> list[str]:
    names: list[str] = []
    if isinstance(tree.this, exp.Schema):
        names += [d.name for d in tree.this.find_all(exp.ColumnDef)]
    query = tree.expression
    while isinstance(query, exp.SetOperation):
        query = query.this
    if isinstance(query, exp.Select):
        for projection in query.selects:
            if isinstance(projection, (exp.Alias, exp.Column)):
                names.append(projection.alias_or_name)
            value = projection.this if isinstance(projection, exp.Alias) else projection
            if isinstance(value, exp.Cast):
                names += [d.name for d in value.to.find_all(exp.ColumnDef)]
    return names


def check_delta_column_names(tree: exp.Expression) -> None:
    """Refuse, as Delta does, a new table whose column names Parquet cannot hold."""
    if not isinstance(tree, exp.Create) or str(tree.args.get("kind") or "").upper() != "TABLE":
        return
    if _column_mapping(tree):
        return
    bad = [n for n in _new_column_names(tree) if set(n) & set(DELTA_INVALID_COLUMN_CHARACTERS)]
    if bad:
        raise ValueError(
            "[DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES] Found invalid character(s) among "
            "' ,;{}()\\n\\t=' in the column names of your schema. Invalid column names: "
            f"{', '.join(bad)}. Please use other characters and try again. Alternatively, "
            "enable Column Mapping to keep using these characters. SQLSTATE: 42K05"
        )
