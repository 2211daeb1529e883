"""The Databricks SQL warehouse engine (databricks-sql-connector)."""
