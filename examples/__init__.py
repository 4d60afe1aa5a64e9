"""Runnable examples (tested by tests/test_examples.py)."""
