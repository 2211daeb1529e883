"""Execution: the facade that runs a plan on an engine, and the readers of a run."""
