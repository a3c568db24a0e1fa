"""synced-store benchmark suite. Run ``python -m benchmarks`` (see docs/benchmarks.md)."""
