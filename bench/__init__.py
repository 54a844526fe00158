"""The benchmark the project keeps: `make bench` (README "Benchmark")."""
