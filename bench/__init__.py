"""Benchmarks: `python -m bench.NAME` prints its figures as one JSON object on the last line."""
