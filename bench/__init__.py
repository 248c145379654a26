"""The performance benchmark of lowrouter: `python -m bench.run` (see bench/README.md)."""
