"""Benchmarks and code generation, run as modules from the repository root: ``python -m scripts.bench_search``."""
