"""Benchmark scripts; a package so that workers can import ``bench.transport``'s tasks."""
