"""Benchmarks: speed measured as ratios against a baseline run side by side (never asserted in tests)."""
