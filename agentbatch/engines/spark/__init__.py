"""The Spark engine: a session (local, cluster or Connect), SQL rewrite, tables, distributed calls."""
