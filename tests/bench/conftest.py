"""Benchmarks print their figures; they run on demand (`make bench`), never in CI."""
