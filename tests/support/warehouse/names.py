"""Qualify and map Unity Catalog names (`catalog.schema.table`) for a local SQL engine.

Every table reference is made fully qualified with the session's namespace (CTE names left
alone), then its catalog and schema are mapped to what the engine calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from sqlglot import exp

from .context import Namespace

# (catalog, schema) -> (engine catalog or None to drop it, engine schema)
NameMapper = Callable[[str, str], tuple[str | None, str]]


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
