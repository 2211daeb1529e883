"""Databricks Asset Bundles: resources from `jobs/`, compiled SQL tasks, the wheel-task entry point."""
