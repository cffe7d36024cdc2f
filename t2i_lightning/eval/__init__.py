"""Measurements: retrieval, zero-shot classification, and (later) the evaluation table."""
