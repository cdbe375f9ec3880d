"""Benchmarks of ckpt-compat against the naive recipe (``make bench``)."""
