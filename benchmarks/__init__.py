"""Benchmarks: `python -m benchmarks [NAME ...]`, JSON results in benchmarks/results/."""
