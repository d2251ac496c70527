"""Benchmarks: `inv bench` runs them and rewrites bench/RESULTS.md (one section each)."""
