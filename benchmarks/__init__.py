"""Benchmarks: each module a script that prints its figures (and a JSON line with --json)."""
