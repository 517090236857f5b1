"""Benchmarks of the controller against its baselines (`make bench`, docs/benchmarks.md)."""
