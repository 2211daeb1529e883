"""SQL: the quoting layer, the sandboxed Jinja environment and the built-in templates."""
