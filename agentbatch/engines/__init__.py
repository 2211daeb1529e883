"""Engines: where SQL runs (local DuckDB, a Databricks SQL warehouse, Spark); see `registry`."""
