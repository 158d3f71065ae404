"""Benchmarks: each module has run(workdir) -> dict[str, float] and prints a table."""
