"""The benchmark the project keeps: `make bench` (docs/benchmarks.md)."""
