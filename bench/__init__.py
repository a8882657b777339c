"""Benchmarks of caviar, run from the repository (not installed): `make bench`."""
