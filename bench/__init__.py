"""Benchmarks: agentbatch against the usual ways of calling an agent over many rows.

`python -m bench` starts its own loopback agent servers (one process per scenario), runs every
client in its own subprocess on the same rows, and writes `bench/results.md`. See `bench/README.md`.
"""
